"""The attack stage of a run: the scenario's attacks on every method's model, each method's block checkpointed.

The attacks themselves, and the ``ServerView`` each one sees, are built by ``strategies.attack_run``; this module
decides which to run, runs them as independent tasks (one per method, plus the inversion's calibration reference)
on ``attacks.workers`` threads (null: ``federation.server_threads``) of one torch thread each, reads and writes
their checkpoints, and records their times.

Every task owns copies of the models it reads (evaluation switches a model's train/eval mode, so two tasks must never
share one) and draws only from its own seeded generators, so a method's block is the same whichever worker runs it,
in whatever order, and with how many workers (tests/strategies/test_attack_stage.py).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from fed_opc.checkpoint import write_json
from fed_opc.models import new_model
from fed_opc.threads import compute_threads
from strategies.run.progress import stage_line

REFERENCE = "reference"  # the task and checkpoint name of the inversion's calibration rows


def attack_all(sc, sd, pretrained, model_of, forget, classes, outcomes, ck: Path, results, progress) -> None:
    """The scenario's attacks on every method's model; each method's block is checkpointed once done.

    ``results["timing"]["attacks"]`` gets the stage's wall seconds here and ``results["timing"]["attack_tasks"]``
    each task's own (they overlap when tasks run side by side), both only when a task ran in this process.
    """
    att = sc.attacks
    if not (att.recovery or att.inversion.targets):
        return
    from strategies.attack_run import (
        attack_method,
        inversion_reference,
        original_readings,
        read_inversion_against_original,
    )

    plots = ck.parent / "plots"
    plots.mkdir(exist_ok=True)
    blocks: dict[str, Any] = {}
    tasks: dict[str, Callable[[], Any]] = {}
    workers = att.workers if att.workers is not None else sc.federation.server_threads
    t0 = time.perf_counter()
    readings = None  # the original model's readings, the same for every method: computed once, when needed
    for m in results["methods"]:
        blocks[m] = _read_attack_checkpoint(ck / f"attacks.{m}.json", progress)
        if blocks[m] is None:
            if att.recovery and readings is None:
                # on one thread, as each task computed them before: a method's numbers never depend on the workers
                with compute_threads(1):
                    readings = original_readings(sc, sd, pretrained, forget)
            obs = outcomes[m].observed if m in outcomes else None
            tasks[m] = _bind(
                attack_method, sc, sd, m, _Own(pretrained), _Own(model_of[m]), forget, tuple(classes), obs,
                lambda: new_model(sc, sd), plots, "cpu", readings,
            )  # fmt: skip
    if att.inversion.targets:
        ref = _read_attack_checkpoint(ck / f"attacks.{REFERENCE}.json", progress)
        if ref is None or "original_global_model" not in ref:
            tasks[REFERENCE] = _bind(inversion_reference, sc, sd, new_model(sc, sd), _Own(pretrained), forget, plots)
        else:
            blocks[REFERENCE] = ref
    if tasks:
        seconds = _run_tasks(tasks, workers, ck, blocks, progress)
        timing = results["timing"]
        timing["attacks"] = time.perf_counter() - t0
        timing["attack_tasks"] = {name: seconds[name] for name in tasks}  # in task order, whatever finished first
    for m in results["methods"]:
        if blocks[m]:
            results["methods"][m]["attacks"] = blocks[m]
    from strategies.reporting.depth import add_depth_gaps

    add_depth_gaps(results)  # each method's normalised recovery against its retrain reference's
    if REFERENCE in blocks:
        results["inversion_reference"] = blocks[REFERENCE]
        read_inversion_against_original(results)


class _Own:
    """A model that other tasks read too: the task gets its own copy, made when it starts (so that at most one set of
    copies per worker exists at a time).
    """

    def __init__(self, model) -> None:
        self.model = model


def _bind(fn, *args) -> Callable[[], Any]:
    """``fn(*args)`` as a task, each ``_Own`` argument copied when the task starts."""
    return lambda: fn(*(copy.deepcopy(a.model) if isinstance(a, _Own) else a for a in args))


def _run_tasks(tasks: dict[str, Callable[[], Any]], workers: int, ck: Path, blocks, progress) -> dict[str, float]:
    """Run ``tasks`` on up to ``workers`` threads (one torch thread each); each result is checkpointed as
    ``attacks.<name>.json`` and put in ``blocks`` by the worker as soon as it is done. Returns each task's seconds.
    When a task fails (or the run is interrupted), the tasks not yet started are dropped, those under way finish and
    are checkpointed (no finished work is lost), and the failure is raised.
    """
    seconds: dict[str, float] = {}

    def run(name: str) -> None:
        stage_line(progress, f"attacks on {name}" if name != REFERENCE else
                   "attacks: inversion of the untrained and the original model (calibration)")  # fmt: skip
        t = time.perf_counter()
        block = tasks[name]()
        seconds[name] = time.perf_counter() - t
        write_json(ck / f"attacks.{name}.json", block)
        blocks[name] = block

    # Set once for all workers: torch's and the BLAS libraries' thread counts are global to the process. One thread
    # each, so N workers use N cores (a BLAS pool per worker would oversubscribe them) and the numbers do not depend
    # on the machine's core count.
    with compute_threads(1):
        if workers <= 1 or len(tasks) == 1:
            for name in tasks:
                run(name)
            return seconds
        pool = ThreadPoolExecutor(max_workers=min(workers, len(tasks)), thread_name_prefix="attacks")
        try:
            futures = [pool.submit(run, name) for name in tasks]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    raise f.exception()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # drop what has not started; let what runs finish
    return seconds


def _read_attack_checkpoint(path: Path, progress: bool) -> dict | None:
    """A finished attack block, or None when there is none; a damaged one is reported and computed again."""
    if not path.is_file():
        return None
    try:
        block = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        stage_line(progress, f"warning: {path}: damaged ({e.__class__.__name__}); attacking again")
        return None
    if not isinstance(block, dict):
        stage_line(progress, f"warning: {path}: damaged (not an attack block); attacking again")
        return None
    return block
