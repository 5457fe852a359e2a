"""``simulate(scenario, out_dir)``: the stages of a run, their checkpoints and the run directory.

Stages, in order: FL pretraining (FedAvg up to the first deletion request's round; reused from the pretraining cache
when an identical one exists), then the stages that later parts add. Every stage checkpoints atomically under
``<out>/checkpoints/`` so ``resume=True`` continues where a killed run stopped, with the same final numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fed_opc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json, write_text
from fed_opc.client_app import make_client_app, new_model
from fed_opc.config import Scenario, scenario_to_dict
from fed_opc.data.scenario_data import ScenarioData, prepare
from fed_opc.flower import run_apps
from strategies import cache
from strategies.server_app import make_server_main
from strategies.training import RoundRecord, TrainingResult, federated_training

log = logging.getLogger("fed_opc")
SCHEMA_VERSION = 1


class RunDirError(ValueError):
    """The output directory cannot be used for this run (e.g. it holds another scenario's run)."""


@dataclass
class RunResult:
    out_dir: Path
    results: dict[str, Any]
    pretrained_state: dict = field(repr=False, default_factory=dict)


def pretrain_rounds(sc: Scenario) -> int:
    """Rounds of FL pretraining: up to the first deletion request (all rounds when there is none)."""
    return min((r.round for r in sc.requests), default=sc.federation.rounds)


def default_out_dir(sc: Scenario) -> Path:
    return Path(sc.output.dir) if sc.output.dir else Path("runs") / sc.name


# Settings that choose how a run executes, not what it computes: a resumed run may change them.
_EXECUTION_KEYS = ("backend", "client_resources", "ray_address", "round_timeout_s")


def _comparable(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k != "output"}
    d["federation"] = {k: v for k, v in (d.get("federation") or {}).items() if k not in _EXECUTION_KEYS}
    return d


def check_out_dir(sc: Scenario, out: Path, resume: bool = False) -> None:
    """Refuse an output folder that is a file, holds another scenario's run, or (to resume) a different version of it."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a directory")
    prev = out / "scenario.yaml"
    if prev.is_file():
        try:
            old = yaml.safe_load(prev.read_text())
        except yaml.YAMLError:
            old = None
        name = old.get("name") if isinstance(old, dict) else None
        if name != sc.name:
            raise RunDirError(
                f"--out {out}: holds a run of another scenario ({name!r}); choose another --out or remove it"
            )
        if resume and _comparable(old) != _comparable(scenario_to_dict(sc)):
            raise RunDirError(f"--out {out}: holds a run of {name!r} with different settings; cannot resume it")
    elif out.is_dir() and any(out.iterdir()):
        raise RunDirError(f"--out {out}: exists, is not empty and holds no fed-opc run")
    elif resume:
        raise RunDirError(f"--out {out}: nothing to resume")


class _FileLog:
    """Route the fed_opc and flwr loggers to ``<out>/log.txt`` for the duration of a run."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.loggers = [logging.getLogger("fed_opc"), logging.getLogger("flwr")]

    def __enter__(self) -> _FileLog:
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.addHandler(self.handler)
        logging.getLogger("fed_opc").setLevel(logging.INFO)
        # Flower logs every round at INFO on the console; our own log and progress bar say what matters
        logging.getLogger("flwr").setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip(self.loggers, self.levels):
            lg.removeHandler(self.handler)
            lg.setLevel(level)
        self.handler.close()


class _Progress:
    """A progress bar over rounds with the latest test accuracy (tqdm; silent when disabled)."""

    def __init__(self, enabled: bool, total: int, desc: str, initial: int = 0) -> None:
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="round", dynamic_ncols=True)

    def update(self, rec: RoundRecord) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(test_acc=f"{rec.test_acc:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def simulate(
    sc: Scenario,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    use_cache: bool = True,
    progress: bool = False,
) -> RunResult:
    """Run scenario ``sc`` and write its run directory.

    Parameters
    ----------
    sc : a validated scenario (``fed_opc.config.load_scenario``).
    out_dir : the run directory (default ``output.dir`` or ``runs/<name>``).
    resume : continue from the checkpoints in ``out_dir``.
    use_cache : reuse (and fill) the pretraining cache.
    progress : show progress bars on stderr.

    """
    t0 = time.perf_counter()
    sd = prepare(sc)  # loads and checks the data before anything is written
    out = Path(out_dir) if out_dir is not None else default_out_dir(sc)
    check_out_dir(sc, out, resume)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_text(out / "scenario.yaml", yaml.safe_dump(scenario_to_dict(sc), sort_keys=False))
    if not resume:
        for f in (out / "checkpoints").glob("*.ckpt"):
            f.unlink()
    with _FileLog(out / "log.txt"):
        log.info("run %s (seed %d) -> %s", sc.name, sc.seed, out)
        result = _run(sc, sd, out, use_cache=use_cache, progress=progress)
        result.results["wall_s"] = time.perf_counter() - t0
        write_json(out / "results.json", result.results)
        log.info("done in %.1f s", result.results["wall_s"])
    return result


def _run(sc: Scenario, sd: ScenarioData, out: Path, *, use_cache: bool, progress: bool) -> RunResult:
    rounds = pretrain_rounds(sc)
    key = cache.pretrain_key(sc, sd, rounds)
    ckpt_path = out / "checkpoints" / "pretrain.ckpt"
    pre: dict[str, Any] = {}
    cached = cache.load_pretrained(key) if use_cache else None
    if cached is not None:
        log.info("pretraining: cache hit %s", key)
        pre = {"state": cached["state"], "rounds": cached["rounds"], "cost": cached["cost"], "cached": True}

    stages = []
    if not pre:
        stages.append(_pretrain_stage(sc, sd, rounds, key, ckpt_path, pre, progress))
    if stages:
        fed = sc.federation
        run_apps(
            make_client_app(sc),
            make_server_main(sd.num_clients, stages, register_timeout_s=max(60.0, fed.round_timeout_s)),
            num_clients=sd.num_clients,
            backend=fed.backend,
            num_cpus=fed.client_resources.num_cpus,
            num_gpus=fed.client_resources.num_gpus,
            ray_address=fed.ray_address,
        )
        if use_cache:
            cache.save_pretrained(key, {k: pre[k] for k in ("state", "rounds", "cost")})

    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "scenario": sc.name,
        "seed": sc.seed,
        "pretrain": {
            "rounds": pre["rounds"],
            "cached": bool(pre.get("cached", False)),
            "cache_key": key,
            "cost": pre["cost"],
        },
        "requests": [
            {
                "id": s.request_id,
                "client": r.client if r.client is not None else "all",
                "scope": s.scope,
                "round": r.round,
                "n_forget": s.n_forget,
                "status": "pending",
            }
            for s, r in zip(sd.requests, sc.requests)
        ],
        "methods": {},
    }
    return RunResult(out, results, pre["state"])


def _pretrain_stage(sc, sd, rounds, key, ckpt_path: Path, pre: dict, progress: bool):
    """FedAvg from the seeded initial model for ``rounds`` rounds, checkpointing every round."""

    def stage(grid, node_of) -> None:
        state = new_model(sc, sd).state_dict()
        history: list[RoundRecord] = []
        prev_cost: dict[str, int] = {}
        first = 1
        if ckpt_path.is_file():
            ck = load_checkpoint(ckpt_path)
            if ck.get("key") != key:
                raise CheckpointError(f"{ckpt_path}: belongs to different pretraining settings; run without --resume")
            state, first = ck["state"], int(ck["round"]) + 1
            history = [RoundRecord(**r) for r in ck["rounds"]]
            prev_cost = dict(ck["cost"])
            log.info("pretraining: resuming after round %d", first - 1)
        bar = _Progress(progress, rounds, "pretrain", initial=first - 1)

        def on_round_end(rnd, st, recs, cost) -> None:
            save_checkpoint(
                ckpt_path,
                {
                    "key": key,
                    "round": rnd,
                    "state": st,
                    "rounds": [r.as_dict() for r in recs],
                    "cost": _add(prev_cost, cost.as_dict()),
                },
            )
            bar.update(recs[-1])

        try:
            res: TrainingResult = federated_training(
                grid,
                sc,
                sd,
                node_of,
                initial_state=state,
                first_round=first,
                last_round=rounds,
                stage="pretrain",
                history=history,
                on_round_end=on_round_end,
            )
        finally:
            bar.close()
        pre.update(
            state=res.state,
            rounds=[r.as_dict() for r in res.rounds],
            cost=_add(prev_cost, res.cost.as_dict()),
            cached=False,
        )

    return stage


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in sorted(set(a) | set(b))}
