"""``simulate``: a run from its scenario to its run directory, and ``_run``, the stages it builds and runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fed_opc.checkpoint import write_json, write_text
from fed_opc.client_app import make_client_app
from fed_opc.config import Scenario, scenario_to_dict
from fed_opc.data.scenario_data import ScenarioData, prepare
from fed_opc.flower import run_apps
from fed_opc.models import new_model
from fed_opc.threads import compute_threads
from fed_opc.unlearning import CENTRALIZED, FEDERATED
from strategies import cache
from strategies.federated.context import MethodOutcome
from strategies.run.attacks import attack_all
from strategies.run.evaluate import MethodResult, evaluate_all
from strategies.run.ledger import Ledger
from strategies.run.methods import finished_outcome, latency_of, method_stage, request_groups
from strategies.run.pretrain import pretrain_rounds, pretrain_stage, store_in_cache
from strategies.run.progress import FileLog, stage_line, timing_line
from strategies.run.run_dir import RunDirError, RunLock, check_out_dir, clear_outputs, default_out_dir
from strategies.server_app import make_server_main

log = logging.getLogger("fed_opc")
SCHEMA_VERSION = 2


@dataclass
class RunResult:
    """A finished run: its directory, the ``results.json`` content, and the models the run directory does not hold."""

    out_dir: Path
    results: dict[str, Any]
    pretrained_state: dict = field(repr=False, default_factory=dict)
    states: dict[str, dict] = field(repr=False, default_factory=dict)  # method -> final global model state
    observed: dict[str, dict] = field(repr=False, default_factory=dict)  # method -> what the server saw


def simulate(
    sc: Scenario,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    use_cache: bool = True,
    progress: bool = False,
    report: bool = True,
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
    report : write metrics.csv, the plots, report.md and report.html at the end. Without it the run directory holds
        results.json and log.txt only (for sweeps); ``python -m strategies.reporting OUT`` writes the report later.
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
            clear_outputs(out)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        resolved = yaml.safe_dump(scenario_to_dict(sc), sort_keys=False)
        if not resume:
            write_text(out / "scenario.yaml", resolved)
        with FileLog(out / "log.txt"):
            log.info("run %s (seed %d) -> %s%s", sc.name, sc.seed, out, " (resumed)" if resume else "")
            try:
                with compute_threads(sc.federation.server_threads):
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
            timing = result.results.setdefault("timing", {})
            if report:
                from strategies.reporting.report import write_report

                t_report = time.perf_counter()
                write_report(out, result.results, scenario_to_dict(sc))
                timing["report"] = time.perf_counter() - t_report
                result.results["wall_s"] = time.perf_counter() - t0
                write_json(out / "results.json", result.results)  # again, with the report's time
            else:
                log.info("no report written (report=False); python -m strategies.reporting %s writes it", out)
            log.info("done in %.1f s; %s", result.results["wall_s"], timing_line(timing))
    return result


def _run(
    sc: Scenario,
    sd: ScenarioData,
    out: Path,
    *,
    use_cache: bool,
    progress: bool,
    engine: Callable[..., Any] | None = None,
) -> RunResult:
    """The run's stages (pretraining, each federated method's, on the engine; then evaluation and attacks) and its
    ``results.json`` content; ``simulate`` owns the run directory around it.
    """
    ck = out / "checkpoints"
    rounds = pretrain_rounds(sc)
    methods = list(sc.unlearning.methods)
    fed_methods = [m for m in methods if m in FEDERATED]
    cen_methods = [m for m in methods if m in CENTRALIZED]
    groups = request_groups(sc, sd) if sc.requests else []
    warnings: list[str] = []
    if methods and not groups:
        warnings.append(f"the scenario has no deletion request: {', '.join(methods)} had nothing to serve")
        stage_line(progress, f"warning: {warnings[-1]}; only FL training runs")
    eraser = sc.unlearning.params.get("fed_eraser") if "fed_eraser" in fed_methods else None
    interval = eraser.interval if eraser is not None else 0
    key = cache.pretrain_key(sc, sd, rounds)
    resume_key = cache.pretrain_key(sc, sd, rounds, execution=False)
    ledger = Ledger.load_or_new(ck / "ledger.json", sc.request_ids(), methods)
    ledger.save()

    pre: dict[str, Any] = {}
    cached = cache.load_pretrained(key, interval) if use_cache else None
    if cached is not None:
        stage_line(progress, f"pretraining: reusing cached model {key}")
        pre = dict(cached) | {"cached": True}

    init_state = new_model(sc, sd).state_dict()
    outcomes: dict[str, MethodOutcome] = {}
    for m in fed_methods:
        if (done := finished_outcome(ck, m, ledger)) is not None:
            outcomes[m] = done
    stages = []
    if not pre:
        stages.append(pretrain_stage(sc, sd, rounds, (key, resume_key), ck / "pretrain.ckpt", pre, progress, interval))
        if use_cache:  # stored as soon as pretraining ends, so other runs can use it while this one goes on
            stages.append(lambda grid, node_of: store_in_cache(key, pre, interval, progress))
    for m in fed_methods:
        if m not in outcomes:
            stages.append(method_stage(sc, sd, m, groups, pre, init_state, rounds, ck, ledger, outcomes, progress))
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
        results["timing"]["federated_methods"] = {m: o.wall_s for m, o in outcomes.items()}
    states = {m: o.state for m, o in outcomes.items()}
    observed = {m: o.observed for m, o in outcomes.items()}
    evaluated: dict[str, MethodResult] = {}
    if groups:
        ev = evaluate_all(
            sc, sd, pre["state"], fed_methods, cen_methods, outcomes, ck, ledger, results["timing"], progress
        )
        evaluated = ev.methods
        results["methods"] = {m: r.to_json() for m, r in evaluated.items()}
        attack_all(sc, sd, ev.pretrained, ev.model_of, ev.forget, ev.classes, outcomes, ck, results, progress)
        states |= {m: r.state for m, r in evaluated.items() if m not in states} | {"original": pre["state"]}
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
            | {"metrics": {m: r.request_metrics[s.request_id] for m, r in evaluated.items()}}
            | (latency if (latency := latency_of(s.request_id, outcomes)) else {})
        )
    return RunResult(out, results, pre["state"], states, observed)
