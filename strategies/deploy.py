"""A Flower deployment on this machine: one SuperLink and N SuperNodes on 127.0.0.1, and ``flwr run`` against them.

``LocalDeployment`` starts every process in its own process group, so that stopping it (always, in ``__exit__``: after
a failure, Ctrl-C or SIGTERM too) ends the SuperLink, the SuperNodes and everything they spawned (SuperExec,
``flwr-serverapp``, ``flwr-clientapp``), and then checks that nothing of it is left. Flower's configuration lives in a
private ``FLWR_HOME`` under the work folder, with one connection, ``local-deployment``; the user's ``~/.flwr`` is not
touched. Apps run from the current Python environment: runtime dependency installation (``uv sync``) is switched off.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("fed_opc")

CONNECTION = "local-deployment"
HOST = "127.0.0.1"


class DeploymentError(RuntimeError):
    """A process of the deployment failed to start, a run failed, or a run did not finish in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def run_config_args(config: dict[str, Any]) -> list[str]:
    """``--run-config`` arguments for ``flwr run`` (one per key; strings quoted as TOML basic strings)."""
    args = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        args += ["--run-config", f"{key}={text}"]
    return args


@dataclass
class Proc:
    """A process this deployment started (the leader of its own process group)."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        """The leader's pid, which is also its process group's id."""
        return self.popen.pid

    def group_alive(self) -> bool:
        """Whether any process of its group is still alive (zombies of reaped children excluded)."""
        return bool(group_members(self.pid))


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``, read from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


@dataclass
class LocalDeployment:
    """A SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1 (insecure), each SuperNode told its partition.

    Parameters
    ----------
    num_nodes : SuperNodes to start; node ``i`` gets ``--node-config "partition-id=i num-partitions=N"``.
    workdir : folder for ``FLWR_HOME``, the logs and the SuperLink's state.
    env : extra environment for every process (e.g. ``FED_OPC_DATA_ROOT``).
    node_config : extra node config entries per partition id (e.g. ``{0: {"data-root": "/data/p0"}}``).

    """

    num_nodes: int
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    node_config: dict[int, dict[str, Any]] = field(default_factory=dict)
    superlink: Proc | None = None
    nodes: list[Proc] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.flwr_home = self.workdir / "flwr_home"

    # ------------------------------------------------------------------------------------------------------------------
    # processes

    def environ(self) -> dict[str, str]:
        """The environment of every process: this one's, with this Python's ``bin`` folder first on ``PATH``,
        ``FLWR_HOME`` under ``workdir``, telemetry, Flower's dependency installation and Ray's usage stats off, then
        ``env`` on top.
        """
        bindir = str(Path(sys.executable).parent)  # flower-superexec & co. are found on PATH
        env = dict(os.environ) | {
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        return env | self.env

    def _spawn(self, name: str, argv: list[str], port: int) -> Proc:
        path = self.workdir / f"{name}.log"
        with open(path, "ab") as f:
            popen = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, env=self.environ(), cwd=self.workdir, start_new_session=True
            )
        log.info("started %s (pid %d): %s", name, popen.pid, shlex.join(argv))
        return Proc(name, popen, path, port)

    def write_connection(self) -> Path:
        """Write ``FLWR_HOME/config.toml`` with the ``local-deployment`` connection (the default one)."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        path = self.flwr_home / "config.toml"
        path.write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{HOST}:{self.port}"\ninsecure = true\n'
        )
        return path

    def start(self, timeout: float = 60.0) -> LocalDeployment:
        """Start the SuperLink, wait until it answers, then start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.write_connection()
        bindir = Path(sys.executable).parent
        self.superlink = self._spawn(
            "superlink",
            [
                str(bindir / "flower-superlink"),
                "--insecure",
                "--isolation",
                "subprocess",
                "--disable-runtime-dependency-installation",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--database",
                str(self.workdir / "superlink.db"),
            ],
            self.port,
        )
        self._wait_superlink(timeout)
        for pid in range(self.num_nodes):
            self.nodes.append(self.start_node(pid))
        return self

    def start_node(self, partition: int) -> Proc:
        """Start the SuperNode of partition ``partition`` (also to bring a stopped one back)."""
        cfg = {"partition-id": partition, "num-partitions": self.num_nodes} | self.node_config.get(partition, {})
        text = " ".join(run_config_args(cfg)[1::2])  # the same key=value syntax as --run-config
        bindir = Path(sys.executable).parent
        port = free_port()
        return self._spawn(
            f"supernode{partition}",
            [
                str(bindir / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"{HOST}:{self.port}",
                "--node-config",
                text,
                "--host",
                HOST,
                "--port",
                str(port),
            ],
            port,
        )

    def _wait_superlink(self, timeout: float) -> None:
        import httpx

        assert self.superlink is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.superlink.popen.poll() is not None:
                raise DeploymentError(
                    f"flower-superlink exited with code {self.superlink.popen.returncode}; see {self.superlink.log_path}"
                )
            try:
                if httpx.get(f"http://{HOST}:{self.port}/health", timeout=0.5).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DeploymentError(f"flower-superlink did not answer within {timeout:.0f} s; see {self.superlink.log_path}")

    def kill_node(self, partition: int) -> None:
        """Kill the SuperNode of ``partition`` and everything it spawned at once (SIGKILL: a device that vanishes)."""
        proc = self.nodes[partition]
        _signal_group(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def stop(self, grace_s: float = 5.0) -> list[str]:
        """Stop every process group this deployment started; returns the names of those that needed SIGKILL.

        Raises ``DeploymentError`` if any process of them is still alive afterwards.
        """
        procs = [*self.nodes, *([self.superlink] if self.superlink else [])]
        for p in procs:
            _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.group_alive() for p in procs):
            time.sleep(0.1)
        killed = []
        for p in procs:
            if p.group_alive():
                killed.append(p.name)
                _signal_group(p.pid, signal.SIGKILL)
        for p in procs:
            try:
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.1)
        left = self.leftovers()
        if left:
            raise DeploymentError(f"processes left behind: {left}")
        return killed

    def leftovers(self) -> list[int]:
        """Live processes of this deployment: in one of its process groups, or naming one of its ports."""
        procs = [*self.nodes, *([self.superlink] if self.superlink else [])]
        pids = {q for p in procs for q in group_members(p.pid)}
        marks = [f"{HOST}:{p.port}".encode() for p in procs]
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    cmd = (d / "cmdline").read_bytes()
                    state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
                except (OSError, IndexError):
                    continue
                if state != "Z" and any(m in cmd for m in marks):
                    pids.add(int(d.name))
        return sorted(pids)

    def __enter__(self) -> LocalDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------------------------
    # runs

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this deployment."""
        argv = [str(Path(sys.executable).parent / "flwr"), *args]
        res = subprocess.run(argv, capture_output=True, text=True, env=self.environ(), timeout=timeout)
        if res.returncode != 0:
            raise DeploymentError(f"{shlex.join(argv)} failed ({res.returncode}): {(res.stderr or res.stdout).strip()}")
        return res

    def run(self, app_dir: Path | str, run_config: dict[str, Any], timeout: float) -> tuple[int, str]:
        """``flwr run APP local-deployment --run-config ... --stream``: submit a run and wait until it finishes.

        Returns the run id and its final status as ``flwr ls`` reports it (``finished:completed`` when it succeeded).
        The streamed logs go to ``<workdir>/run.log``. A run that does not finish within ``timeout`` seconds is stopped
        (``flwr stop``) and ``DeploymentError`` is raised.
        """
        argv = [str(Path(sys.executable).parent / "flwr"), "run", str(app_dir), CONNECTION]
        argv += [*run_config_args(run_config), "--stream"]
        path = self.workdir / "run.log"
        with open(path, "ab") as f:
            cli = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=self.environ(), cwd=self.workdir)
        run_id = None
        try:
            cli.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            cli.kill()
            cli.wait()
            run_id = self._run_id(path)
            if run_id is not None:
                self.flwr("stop", str(run_id), CONNECTION)
            raise DeploymentError(
                f"run {run_id} did not finish within {timeout:.0f} s; stopped it (see {path})"
            ) from None
        except BaseException:  # Ctrl-C: the CLI goes first, the deployment's own __exit__ stops the rest
            cli.kill()
            cli.wait()
            raise
        run_id = self._run_id(path)
        if cli.returncode != 0 or run_id is None:
            raise DeploymentError(f"{shlex.join(argv)} failed ({cli.returncode}); see {path}")
        return run_id, self.status(run_id)

    @staticmethod
    def _run_id(path: Path) -> int | None:
        import re

        # the log is appended to by every run of this deployment: the last run started is this one
        ids = re.findall(r"Successfully started run (\d+)", path.read_text(errors="replace"))
        return int(ids[-1]) if ids else None

    def status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it, e.g. ``running`` or ``finished:completed``."""
        res = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        payload = json.loads(res.stdout[res.stdout.index("{") :])
        return str(payload["runs"][0]["status"])

    def logs(self, run_id: int) -> str:
        """The run's logs (``flwr log``), as far as the SuperLink has them."""
        return self.flwr("log", str(run_id), CONNECTION, "--show", timeout=60).stdout


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
