"""``simulate(scenario, out_dir)``: the stages of a run, their checkpoints and the run directory.

Stages, in order:

1. FL pretraining: FedAvg up to the first deletion request's round, reused from the pretraining cache when an
   identical one exists (with the client-update history FedEraser needs, when it is among the methods);
2. every federated method serves the requests in its own world (``strategies.federated_methods``): requests that fire
   at the same round are served together; between request rounds, and after the last one up to
   ``federation.rounds``, the world continues FedAvg without the served data;
3. the centralized methods run on the pretrained global model with the union of all forget sets;
4. every resulting model is evaluated against ground truth (``fed_opc.metrics``).

A ledger of the requests (``checkpoints/ledger.json``: pending -> unlearning -> done, per method) and every stage's
state are checkpointed atomically under ``<out>/checkpoints/``, so ``resume=True`` continues a killed run without
serving any request twice and reaches the same final numbers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fed_opc.centralized import run_centralized
from fed_opc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json, write_text
from fed_opc.client_app import make_client_app
from fed_opc.config import Scenario, scenario_to_dict
from fed_opc.data.forget import ForgetSplit, union_forget
from fed_opc.data.scenario_data import ScenarioData, prepare
from fed_opc.edge import edge_of, new_clock
from fed_opc.flower import EngineError, run_apps
from fed_opc.metrics import EvalSet, accuracy_from_logits, evaluate_outputs, model_outputs
from fed_opc.models import new_model
from fed_opc.threads import torch_threads
from fed_opc.unlearning import CENTRALIZED, FEDERATED
from strategies import cache
from strategies.federated_methods import IDLE_LIMIT, NEEDS_REQUESTER, SERVE, FedContext, MethodOutcome, fedavg_world
from strategies.server_app import make_server_main
from strategies.training import RoundRecord, TrainingResult, federated_training

log = logging.getLogger("fed_opc")
SCHEMA_VERSION = 2


class RunDirError(ValueError):
    """The output directory cannot be used for this run (e.g. it holds another scenario's run)."""


@dataclass
class RunResult:
    out_dir: Path
    results: dict[str, Any]
    pretrained_state: dict = field(repr=False, default_factory=dict)
    states: dict[str, dict] = field(repr=False, default_factory=dict)  # method -> final global model state
    observed: dict[str, dict] = field(repr=False, default_factory=dict)  # method -> what the server saw


def pretrain_rounds(sc: Scenario) -> int:
    """Rounds of FL pretraining: up to the first deletion request (all rounds when there is none)."""
    return min((r.round for r in sc.requests), default=sc.federation.rounds)


def request_groups(sc: Scenario, sd: ScenarioData) -> list[tuple[int, list[ForgetSplit]]]:
    """Requests grouped by the round they fire at, in round order."""
    by_round: dict[int, list[ForgetSplit]] = defaultdict(list)
    for r, split in zip(sc.requests, sd.requests):
        by_round[r.round].append(split)
    return sorted(by_round.items())


def default_out_dir(sc: Scenario) -> Path:
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


def _clear_outputs(out: Path) -> None:
    """Remove a previous run's outputs and checkpoints (``--overwrite``); results.json goes first."""
    for name in _OUTPUTS:
        (out / name).unlink(missing_ok=True)
    (out / "log.txt").unlink(missing_ok=True)
    for sub in ("checkpoints", "plots"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)


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

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="round", dynamic_ncols=True)

    def skip_to(self, done: int) -> None:
        """Count ``done`` rounds as already finished (a resumed stage)."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def update(self, rec: RoundRecord) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if rec.test_acc == rec.test_acc:  # rounds between evaluations keep the last accuracy shown
                self.bar.set_postfix(test_acc=f"{rec.test_acc:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Ledger:
    """The deletion requests and their status, per method; saved atomically on every change.

    A request is ``pending`` until a method starts serving it, ``unlearning`` while methods serve it, and ``done`` when
    every method of the run has served it. ``methods[m]`` records ``unlearning`` / ``done`` for method ``m``.
    """

    def __init__(self, path: Path, request_ids: list[str], methods: list[str]) -> None:
        self.path = path
        self.methods = methods
        self.entries: dict[str, dict[str, Any]] = {r: {"status": "pending", "methods": {}} for r in request_ids}

    @classmethod
    def load_or_new(cls, path: Path, request_ids: list[str], methods: list[str]) -> Ledger:
        led = cls(path, request_ids, methods)
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{path}: corrupted ledger ({e.msg})") from None
            entries = saved.get("requests") if isinstance(saved, dict) else None
            if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("status"), str) and isinstance(e.get("methods"), dict)
                for e in entries.values()
            ):
                raise CheckpointError(f"{path}: corrupted ledger (not a fed-opc request ledger)")
            if sorted(entries) != sorted(request_ids):
                raise CheckpointError(f"{path}: the ledger holds other requests; run without --resume")
            led.entries = entries
        return led

    def save(self) -> None:
        write_json(self.path, {"requests": self.entries})

    def mark(self, request_ids: list[str], method: str, status: str) -> None:
        for r in request_ids:
            e = self.entries[r]
            e["methods"][method] = status
            done = all(e["methods"].get(m) == "done" for m in self.methods)
            e["status"] = "done" if done else "unlearning"
        self.save()

    def done(self, method: str) -> bool:
        return bool(self.entries) and all(e["methods"].get(method) == "done" for e in self.entries.values())


def simulate(
    sc: Scenario,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    use_cache: bool = True,
    progress: bool = False,
    engine: Callable[..., Any] | None = None,
) -> RunResult:
    """Run scenario ``sc`` and write its run directory.

    Parameters
    ----------
    sc : a validated scenario (``fed_opc.config.load_scenario``).
    out_dir : the run directory (default ``output.dir`` or ``runs/<name>``).
    resume : continue from the checkpoints in ``out_dir``.
    overwrite : replace a run of the same scenario that ``out_dir`` holds (without it, such a folder is refused).
    use_cache : reuse (and fill) the pretraining cache.
    progress : show progress bars on stderr.
    engine : runs the server body instead of ``fed_opc.flower.run_apps`` (same arguments); ``strategies.flwr_app``
        passes one that runs it on the grid of a Flower ServerApp (``flwr run``).

    """
    t0 = time.perf_counter()
    sd = prepare(sc)  # loads and checks the data before anything is written
    out = Path(out_dir) if out_dir is not None else default_out_dir(sc)
    check_out_dir(sc, out, resume, overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    with RunLock(out):
        check_out_dir(sc, out, resume, overwrite)  # again under the lock: another run may have started meanwhile
        if not resume:
            _clear_outputs(out)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        resolved = yaml.safe_dump(scenario_to_dict(sc), sort_keys=False)
        if not resume:
            write_text(out / "scenario.yaml", resolved)
        with _FileLog(out / "log.txt"):
            log.info("run %s (seed %d) -> %s%s", sc.name, sc.seed, out, " (resumed)" if resume else "")
            try:
                with torch_threads(sc.federation.server_threads):
                    result = _run(sc, sd, out, use_cache=use_cache, progress=progress, engine=engine)
            except BaseException as e:
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    log.warning("interrupted; the checkpoints let --resume continue")
                else:
                    log.exception("run failed")
                raise
            if resume:  # a resumed run may have changed execution settings: its scenario.yaml says which it ran with
                write_text(out / "scenario.yaml", resolved)
            result.results["wall_s"] = time.perf_counter() - t0
            write_json(out / "results.json", result.results)
            from strategies.reporting.report import write_report

            t_report = time.perf_counter()
            write_report(out, result.results, scenario_to_dict(sc))
            timing = result.results.setdefault("timing", {})
            timing["report"] = time.perf_counter() - t_report
            result.results["wall_s"] = time.perf_counter() - t0
            write_json(out / "results.json", result.results)  # again, with the report's time
            log.info("done in %.1f s; %s", result.results["wall_s"], _timing_line(timing))
    return result


def _timing_line(timing: dict[str, Any]) -> str:
    """``stage 12.3 s, ...`` for the log (per-method entries summed under their stage)."""
    parts = []
    for stage, v in timing.items():
        total = sum(v.values()) if isinstance(v, dict) else v
        parts.append(f"{stage} {total:.1f} s")
    return ", ".join(parts)


def _stage_line(progress: bool, text: str) -> None:
    log.info(text)
    if progress:
        import sys

        print(f"[fed-opc] {text}", file=sys.stderr, flush=True)


def _run(
    sc: Scenario,
    sd: ScenarioData,
    out: Path,
    *,
    use_cache: bool,
    progress: bool,
    engine: Callable[..., Any] | None = None,
) -> RunResult:
    ck = out / "checkpoints"
    rounds = pretrain_rounds(sc)
    methods = list(sc.unlearning.methods)
    fed_methods = [m for m in methods if m in FEDERATED]
    cen_methods = [m for m in methods if m in CENTRALIZED]
    groups = request_groups(sc, sd) if sc.requests else []
    warnings: list[str] = []
    if methods and not groups:
        warnings.append(f"the scenario has no deletion request: {', '.join(methods)} had nothing to serve")
        _stage_line(progress, f"warning: {warnings[-1]}; only FL training runs")
    eraser = sc.unlearning.params.get("fed_eraser") if "fed_eraser" in fed_methods else None
    interval = eraser.interval if eraser is not None else 0
    key = cache.pretrain_key(sc, sd, rounds)
    resume_key = cache.pretrain_key(sc, sd, rounds, execution=False)
    ledger = Ledger.load_or_new(ck / "ledger.json", sc.request_ids(), methods)
    ledger.save()

    pre: dict[str, Any] = {}
    cached = cache.load_pretrained(key, interval) if use_cache else None
    if cached is not None:
        _stage_line(progress, f"pretraining: reusing cached model {key}")
        pre = dict(cached) | {"cached": True}

    init_state = new_model(sc, sd).state_dict()
    outcomes: dict[str, MethodOutcome] = {}
    for m in fed_methods:
        p = ck / f"method.{m}.ckpt"
        if ledger.done(m) and p.is_file():
            saved = load_checkpoint(p)
            outcomes[m] = MethodOutcome(
                saved["state"],
                saved["cost"],
                saved["diagnostics"],
                saved["observed"],
                saved.get("latency", {}),
                saved.get("edge", {}),
            )
    stages = []
    if not pre:
        stages.append(_pretrain_stage(sc, sd, rounds, (key, resume_key), ck / "pretrain.ckpt", pre, progress, interval))
        if use_cache:  # stored as soon as pretraining ends, so other runs can use it while this one goes on
            stages.append(lambda grid, node_of: _store_in_cache(key, pre, interval, progress))
    for m in fed_methods:
        if m not in outcomes:
            stages.append(_method_stage(sc, sd, m, groups, pre, init_state, rounds, ck, ledger, outcomes, progress))
    if stages:
        fed = sc.federation
        (engine or run_apps)(
            make_client_app(sc),
            make_server_main(sd.num_clients, stages, register_timeout_s=max(60.0, fed.round_timeout_s)),
            num_clients=sd.num_clients,
            backend=fed.backend,
            num_cpus=fed.client_resources.num_cpus,
            num_gpus=fed.client_resources.num_gpus,
            ray_address=fed.ray_address,
        )

    if pre.get("clock"):  # an edge federation: the simulated clock at the end of each pretraining round
        ends = pre["clock"]["round_end_s"]
        pre["rounds"] = [
            r | ({"sim_s": ends[str(r["round"])]} if str(r["round"]) in ends else {}) for r in pre["rounds"]
        ]
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
        "requests": [],
        "methods": {},
    }
    if warnings:
        results["warnings"] = warnings
    # seconds per stage, of this process (a cached or resumed stage counts what it took here)
    results["timing"] = {"pretraining": float(pre.get("wall_s", 0.0)) if not pre.get("cached") else 0.0}
    if outcomes:
        results["timing"]["federated_methods"] = {m: float(o.cost.get("wall_s", 0.0)) for m, o in outcomes.items()}
    states = {m: o.state for m, o in outcomes.items()}
    observed = {m: o.observed for m, o in outcomes.items()}
    if groups:
        _evaluate_all(sc, sd, pre["state"], fed_methods, cen_methods, outcomes, ck, ledger, results, states, progress)
    for s, r in zip(sd.requests, sc.requests):
        entry = ledger.entries[s.request_id]
        results["requests"].append(
            {
                "id": s.request_id,
                "client": r.client if r.client is not None else "all",
                "scope": s.scope,
                "round": r.round,
                "n_forget": s.n_forget,
                "status": entry["status"],
                "clients": list(s.clients),
            }
            | ({"classes": list(s.classes)} if s.classes else {})
            | {"metrics": results.pop(f"_request_metrics/{s.request_id}", {})}
            | (latency if (latency := _latency_of(s.request_id, outcomes)) else {})
        )
    return RunResult(out, results, pre["state"], states, observed)


def _latency_of(request_id: str, outcomes: dict[str, MethodOutcome]) -> dict[str, Any]:
    """``{"latency": {method: {requested_round, served_round, latency_rounds, latency_s?, overdue?, served_by}}}``."""
    per = {m: o.latency[request_id] for m, o in outcomes.items() if request_id in o.latency}
    return {"latency": per} if per else {}


def _evaluate_all(sc, sd, pre_state, fed_methods, cen_methods, outcomes, ck: Path, ledger, results, states, progress):
    """Centralized methods, then metrics for every method on the union of the forget sets."""
    forget = union_forget(sd.requests)
    retain = np.setdiff1d(sd.pool, forget)
    classes = sorted({c for r, s in zip(sc.requests, sd.requests) if r.clients == "all" for c in s.classes})
    device = torch.device("cpu")
    pretrained = new_model(sc, sd)
    pretrained.load_state_dict(pre_state, strict=True)
    cen_ckpt = ck / "centralized.ckpt"
    cen: dict[str, Any] = {}
    if cen_methods:
        if cen_ckpt.is_file() and all(
            ledger.entries[r]["methods"].get(m) == "done" for r in ledger.entries for m in cen_methods
        ):
            cen = load_checkpoint(cen_ckpt)
        else:
            for m in cen_methods:
                ledger.mark(sc.request_ids(), m, "unlearning")
            _stage_line(progress, f"centralized methods: {', '.join(cen_methods)}")
            t_cen = time.perf_counter()
            runs = run_centralized(
                pretrained,
                sd.data,
                forget,
                retain,
                sd.test_idx,
                cen_methods,
                {m: sc.unlearning.params[m] for m in cen_methods},
                seed=sc.seed,
                device=device,
                forgotten_classes=classes,
                log=lambda line: log.info("centralized %s", line),
            )
            cen = {m: {"state": r.model.state_dict(), "metrics": r.metrics, "cost": r.cost} for m, r in runs.items()}
            results["timing"]["centralized_methods"] = time.perf_counter() - t_cen
            save_checkpoint(cen_ckpt, cen)
            for m in cen_methods:
                ledger.mark(sc.request_ids(), m, "done")
    for m in cen_methods:
        states[m] = cen[m]["state"]

    ev = EvalSet.make(sd.data.train, sd.data.test, forget, retain, sd.test_idx, seed=sc.seed, forgotten_classes=classes)
    original = model_outputs(pretrained, ev, device=device)
    model_of = {}
    for m, st in states.items():
        net = new_model(sc, sd)
        net.load_state_dict(st, strict=True)
        model_of[m] = net
    outputs = {m: model_outputs(net, ev, device=device) for m, net in model_of.items()}
    fed_ref = "fed_retrain" if "fed_retrain" in outputs else None
    ref_metrics = None
    if fed_ref:
        ref_metrics = evaluate_outputs(
            outputs[fed_ref], ev, head_weight=model_of[fed_ref].head.weight, original=original
        )
    for m in fed_methods:
        o = outcomes[m]
        metrics = evaluate_outputs(
            outputs[m],
            ev,
            head_weight=model_of[m].head.weight,
            original=original,
            retrain=outputs.get(fed_ref) if fed_ref else outputs.get("retrain"),
            retrain_metrics=ref_metrics,
        )
        if m == fed_ref:
            metrics["avg_gap"] = 0.0
        metrics = {"RTE_s": float(o.cost.get("wall_s", 0.0))} | metrics
        cost = {
            k: o.cost.get(k, 0)
            for k in ("rounds", "client_samples", "bytes_up", "bytes_down", "server_storage_bytes", "failures")
        }
        results["methods"][m] = {"setting": "federated", "metrics": metrics, "cost": cost}
        if o.diagnostics:
            results["methods"][m]["diagnostics"] = o.diagnostics
        if o.edge:
            results["methods"][m]["edge"] = o.edge
    for m in cen_methods:
        c = cen[m]
        cost = {
            "rounds": 0,
            "client_samples": int(c["cost"].get("client_samples", 0)),
            "bytes_up": 0,
            "bytes_down": 0,
            "server_storage_bytes": 0,
        }
        results["methods"][m] = {"setting": "centralized", "metrics": dict(c["metrics"]), "cost": cost}
    # per request: UA on its own forget set (a subset of the union, whose logits every method already has), RA / TA
    # as for the union
    for s in sd.requests:
        pos = np.searchsorted(ev.forget_idx, s.forget)
        y = torch.from_numpy(sd.data.train.labels[s.forget])
        per: dict[str, dict[str, float]] = {}
        for m in results["methods"]:
            mm = results["methods"][m]["metrics"]
            ua = 1.0 - accuracy_from_logits(outputs[m].forget_logits[pos], y)
            per[m] = {"UA": ua, "RA": mm["RA"], "TA": mm["TA"]}
        results[f"_request_metrics/{s.request_id}"] = per
    _attack_all(sc, sd, pretrained, model_of, forget, classes, outcomes, ck, results, progress)
    states["original"] = pre_state


def _attack_all(sc, sd, pretrained, model_of, forget, classes, outcomes, ck: Path, results, progress) -> None:
    """The scenario's attacks on every method's model; each method's block is checkpointed once done."""
    att = sc.attacks
    if not (att.recovery or att.inversion.targets):
        return
    from strategies.attack_run import attack_method, inversion_reference, read_inversion_against_original

    plots = ck.parent / "plots"
    plots.mkdir(exist_ok=True)
    for m in results["methods"]:
        path = ck / f"attacks.{m}.json"
        block = _read_attack_checkpoint(path, progress)
        if block is None:
            _stage_line(progress, f"attacks on {m}")
            t_att = time.perf_counter()
            obs = outcomes[m].observed if m in outcomes else None
            block = attack_method(
                sc, sd, m, pretrained, model_of[m], forget, tuple(classes), obs, lambda: new_model(sc, sd), plots
            )
            write_json(path, block)
            results["timing"].setdefault("attacks", {})[m] = time.perf_counter() - t_att
        if block:
            results["methods"][m]["attacks"] = block
    from strategies.reporting.depth import add_depth_gaps

    add_depth_gaps(results)  # each method's normalised recovery against its retrain reference's
    if att.inversion.targets:
        path = ck / "attacks.reference.json"
        ref = _read_attack_checkpoint(path, progress)
        if ref is None or "original_global_model" not in ref:
            _stage_line(progress, "attacks: inversion of the untrained and the original model (calibration)")
            t_ref = time.perf_counter()
            ref = inversion_reference(sc, sd, new_model(sc, sd), pretrained, forget, plots)
            write_json(path, ref)
            results["timing"].setdefault("attacks", {})["reference"] = time.perf_counter() - t_ref
        results["inversion_reference"] = ref
        read_inversion_against_original(results)


def _read_attack_checkpoint(path: Path, progress: bool) -> dict | None:
    """A finished attack block, or None when there is none; a damaged one is reported and computed again."""
    if not path.is_file():
        return None
    try:
        block = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        _stage_line(progress, f"warning: {path}: damaged ({e.__class__.__name__}); attacking again")
        return None
    if not isinstance(block, dict):
        _stage_line(progress, f"warning: {path}: damaged (not an attack block); attacking again")
        return None
    return block


def _method_stage(sc, sd, m, groups, pre, init_state, rounds, ck: Path, ledger: Ledger, outcomes, progress):
    """One federated method serving every request group in its own world (a ServerApp stage).

    The world starts from the pretrained model at the first request's round. Requests that fire at the same round are
    served together; between request rounds, and after the last one up to ``federation.rounds``, the world continues
    FedAvg without the served data. On an edge federation (``federation.availability``), a method that needs its
    requester (``NEEDS_REQUESTER``) first waits for it to come online, the world training meanwhile without the
    pending request's data; a request still waiting after its ``deadline_rounds`` is served by
    ``unlearning.fallback`` when one is set. Every request's latency is recorded.
    """

    def stage(grid, node_of) -> None:
        t0 = time.perf_counter()
        state = pre["state"]
        served: list[str] = []
        total = {
            "rounds": 0,
            "client_samples": 0,
            "bytes_up": 0,
            "bytes_down": 0,
            "server_storage_bytes": 0,
            "messages": 0,
            "failures": 0,
        }
        diagnostics: dict[str, Any] = {}
        observed: dict[str, Any] = {}
        latency: dict[str, dict[str, Any]] = {}
        history = pre.get("updates")
        availability, _ = edge_of(sc)
        clock = new_clock(sc, pre.get("clock"))
        request_cfg = dict(zip(sc.request_ids(), sc.requests))
        cur = groups[0][0] if groups else 0  # the last round the world has trained

        def context(served_before: list[str], round0: int) -> FedContext:
            return FedContext(
                grid, sc, sd, node_of, m, list(served_before), round0, ck, init_state, rounds, history,
                availability, clock,
            )  # fmt: skip

        def add(cost: dict, rounds_: int | None = None) -> None:
            for k in total:
                total[k] += cost.get(k, 0) if rounds_ is None or k != "rounds" else rounds_

        def serve(
            method: str, splits: list[ForgetSplit], rnd: int, requested: float, one_by_one: bool, pending=()
        ) -> None:
            """Serve ``splits`` with ``method``; ``pending``: requests of the same round still waiting (excluded too)."""
            nonlocal state, observed, cur
            ids = [s.request_id for s in splits]
            ctx = context(served + [p.request_id for p in pending], cur)
            outcome = SERVE[method](ctx, splits, sc.unlearning.params[method], state)
            state = outcome.state
            add(outcome.cost)
            if one_by_one:  # an edge federation: each request served when its requester is online
                diag = outcome.diagnostics | ({"served_by": method} if method != m else {})
                diagnostics.setdefault("requests", {})[ids[0]] = diag
            else:
                diagnostics.update({f"round{rnd}": outcome.diagnostics} if len(groups) > 1 else outcome.diagnostics)
            observed = observed or outcome.observed
            served.extend(ids)
            for s in splits:
                entry = {
                    "requested_round": rnd,
                    "served_round": cur + int(outcome.cost.get("rounds", 0)),
                    "served_by": method,
                }
                entry["latency_rounds"] = entry["served_round"] - rnd
                deadline = request_cfg[s.request_id].deadline_rounds
                if deadline is not None:
                    entry["overdue"] = entry["latency_rounds"] > deadline or method != m
                if clock is not None and clock.devices.enabled:
                    entry["latency_s"] = clock.now_s - requested
                latency[s.request_id] = entry
            if clock is not None:
                # on an edge federation the rounds spent serving are rounds of the world's timeline (and clock): the
                # world goes on after them
                cur = max(cur, cur + int(outcome.cost.get("rounds", 0)))

        def wait_rounds(pending: list[ForgetSplit], last: int, tag: str) -> None:
            """FedAvg rounds cur+1..last without the served and the pending requests' data."""
            nonlocal state, cur
            if last <= cur:
                return
            if clock is not None:
                clock.offline_met += last - cur  # rounds in which the pending request's requester was offline
            state_, meter, _ = fedavg_world(context(served, cur), pending, state, cur + 1, last, tag)
            state = state_
            add(meter, last - cur)
            cur = last

        for i, (rnd, splits) in enumerate(groups):
            ids = [s.request_id for s in splits]
            _stage_line(progress, f"{m}: serving {', '.join(ids)} (round {rnd})")
            ledger.mark(ids, m, "unlearning")
            cur = max(cur, rnd)
            requested = clock.round_end_s.get(rnd, clock.now_s) if clock is not None else 0.0
            if availability is None or m not in NEEDS_REQUESTER:
                serve(m, splits, rnd, requested, one_by_one=False)
            else:
                for j, split in enumerate(splits):
                    online_at = availability.next_online(split.clients, after=cur, limit=IDLE_LIMIT)
                    deadline = request_cfg[split.request_id].deadline_rounds
                    fallback = sc.unlearning.fallback
                    late = deadline is not None and (online_at is None or online_at - rnd > deadline)
                    if late and fallback is not None:
                        wait_rounds(splits[j:], rnd + deadline, f"wait{rnd}.{split.request_id}")
                        _stage_line(progress, f"{m}: {split.request_id} overdue; served by {fallback}")
                        serve(fallback, [split], rnd, requested, one_by_one=True, pending=splits[j + 1 :])
                        continue
                    if online_at is None:
                        raise EngineError(f"{m}: no requester of {split.request_id} online within {IDLE_LIMIT} rounds")
                    wait_rounds(splits[j:], online_at - 1, f"wait{rnd}.{split.request_id}")
                    serve(m, [split], rnd, requested, one_by_one=True, pending=splits[j + 1 :])
            nxt = groups[i + 1][0] if i + 1 < len(groups) else sc.federation.rounds
            if nxt > cur:  # the world goes on training without the served data until the next request (or the end)
                cont = context(served, rnd)
                state, meter, _ = fedavg_world(cont, [], state, cur + 1, nxt, f"continue{rnd}")
                add(meter, nxt - cur)
                cur = nxt
        total["wall_s"] = time.perf_counter() - t0
        edge = clock.as_dict() if clock is not None else {}
        outcomes[m] = MethodOutcome(state, total, diagnostics, observed, latency, edge)
        save_checkpoint(
            ck / f"method.{m}.ckpt",
            {
                "state": state,
                "cost": total,
                "diagnostics": diagnostics,
                "observed": observed,
                "latency": latency,
                "edge": edge,
            },
        )
        ledger.mark(served, m, "done")
        _stage_line(progress, f"{m}: done in {total['wall_s']:.1f} s")

    return stage


def _pretrain_stage(sc, sd, rounds, keys: tuple[str, str], ckpt_path: Path, pre: dict, progress: bool, interval: int):
    """FedAvg from the seeded initial model for ``rounds`` rounds, checkpointing every round.

    ``keys`` = (the cache key, the same key without execution settings). A checkpoint whose settings differ only in
    execution settings (client resources) is resumed; the result then mixes two thread counts, so it is not cached.
    With ``interval`` > 0 the server also stores every client update of rounds 1, 1 + interval, ... (FedEraser's
    history), checkpointed with the model.
    """
    key, resume_key = keys

    def stage(grid, node_of) -> None:
        updates: dict[int, dict[int, dict]] = {}
        clock = new_clock(sc)

        def resume(saved: dict[str, Any]) -> None:
            if saved.get("resume_key") != resume_key:
                raise CheckpointError(f"{ckpt_path}: belongs to different pretraining settings; run without --resume")
            if saved.get("key") != key:
                pre["mixed_settings"] = True
                _stage_line(progress, "pretraining resumed under other client resources (thread counts)")
            updates.update({int(r): {int(p): u for p, u in per.items()} for r, per in saved.get("updates", {}).items()})
            bar.skip_to(int(saved["round"]))

        def sink(rnd: int, pid: int, update: dict) -> None:
            if (rnd - 1) % interval == 0:
                updates.setdefault(rnd, {})[pid] = update

        t_stage = time.perf_counter()
        bar = _Progress(progress, rounds, "pretrain")
        try:
            res: TrainingResult = federated_training(
                grid,
                sc,
                sd,
                node_of,
                initial_state=new_model(sc, sd).state_dict(),
                first_round=1,
                last_round=rounds,
                stage="pretrain",
                checkpoint=ckpt_path,
                checkpoint_extra=lambda: {"key": key, "resume_key": resume_key, "updates": updates},
                on_resume=resume,
                on_round_end=bar.update,
                update_sink=sink if interval else None,
                availability=edge_of(sc)[0],
                clock=clock,
            )
        finally:
            bar.close()
        pre.update(state=res.state, rounds=[r.as_dict() for r in res.rounds], cost=res.cost.as_dict(), cached=False)
        if clock is not None:
            pre["clock"] = clock.state()
        pre["wall_s"] = time.perf_counter() - t_stage
        if interval:
            pre["updates"] = updates

    return stage


def _store_in_cache(key: str, pre: dict[str, Any], interval: int, progress: bool) -> None:
    """Store the pretraining in the cache; a cache is an optimisation, so a failure to write it is a warning."""
    if pre.get("mixed_settings"):
        _stage_line(progress, "pretraining was resumed under other client resources: not stored in the cache")
        return
    try:
        cache.save_pretrained(key, _cache_entry(pre), interval)
    except OSError as e:
        _stage_line(progress, f"warning: cannot write the pretraining cache ({e.strerror or e}); going on without it")


def _cache_entry(pre: dict[str, Any]) -> dict[str, Any]:
    return {k: pre[k] for k in ("state", "rounds", "cost", "updates", "clock") if k in pre}
