"""The run directory: which folders a run may write to, its lock, and clearing a previous run's outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from fed_opc.config import Scenario, scenario_to_dict


class RunDirError(ValueError):
    """The output directory cannot be used for this run (e.g. it holds another scenario's run)."""


def default_out_dir(sc: Scenario) -> Path:
    """``output.dir`` of the scenario, else ``runs/<name>`` (relative to the working directory)."""
    return Path(sc.output.dir) if sc.output.dir else Path("runs") / sc.name


# Settings that choose how a run executes, not what it computes: a resumed run may change them.
_EXECUTION_KEYS = ("backend", "client_resources", "ray_address", "round_timeout_s")


def _comparable(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k != "output"}
    d["federation"] = {k: v for k, v in (d.get("federation") or {}).items() if k not in _EXECUTION_KEYS}
    return d


# What a run writes into its directory beside checkpoints/ and log.txt; a fresh run over an old one removes these
# first, so a results.json never sits beside a scenario.yaml it does not belong to.
_OUTPUTS = ("results.json", "metrics.csv", "report.md", "report.html", "summary.json", "summary.md", "summary.csv")
LOCK_NAME = ".lock"


def check_out_dir(sc: Scenario, out: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse an output folder that is unusable, holds another scenario's run, or (to resume) a different version.

    A folder that holds a run of this scenario is continued with ``resume`` or replaced with ``overwrite``; without
    either it is refused, so a finished run is never thrown away by accident.
    """
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"--out {out}: {parent} exists and is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise RunDirError(f"--out {out}: {parent} is not writable")
            break
    prev = out / "scenario.yaml"
    if prev.is_file():
        try:
            old = yaml.safe_load(prev.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            old = None
        name = old.get("name") if isinstance(old, dict) else None
        if name != sc.name:
            raise RunDirError(
                f"--out {out}: holds a run of another scenario ({name!r}); choose another --out or remove it"
            )
        if resume and _comparable(old) != _comparable(scenario_to_dict(sc)):
            raise RunDirError(f"--out {out}: holds a run of {name!r} with different settings; cannot resume it")
        if not resume and not overwrite:
            raise RunDirError(
                f"--out {out}: holds a run of {name!r}; continue it with --resume or replace it with --overwrite"
            )
    elif out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise RunDirError(f"--out {out}: exists, is not empty and holds no fed-opc run")
    elif resume:
        raise RunDirError(f"--out {out}: nothing to resume")


class RunLock:
    """An exclusive lock on a run directory (``<out>/.lock``) for the extent of a run.

    A second run into the same folder is refused at once instead of mixing its results with the first one's. The lock
    is an OS file lock: a killed run releases it, so ``--resume`` never finds a stale lock.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunDirError(f"--out {self.path.parent}: another run is writing to it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def clear_outputs(out: Path) -> None:
    """Remove a previous run's outputs and checkpoints (``--overwrite``); results.json goes first."""
    for name in _OUTPUTS:
        (out / name).unlink(missing_ok=True)
    (out / "log.txt").unlink(missing_ok=True)
    for sub in ("checkpoints", "plots"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
