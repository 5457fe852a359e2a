"""The attack stage of a run: the scenario's attacks on every method's model, each method's block checkpointed.

The attacks themselves, and the ``ServerView`` each one sees, are built by ``strategies.attack_run``; this module
decides which to run, reads and writes their checkpoints, and records their times.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fed_opc.checkpoint import write_json
from fed_opc.models import new_model
from strategies.run.progress import stage_line


def attack_all(sc, sd, pretrained, model_of, forget, classes, outcomes, ck: Path, results, progress) -> None:
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
            stage_line(progress, f"attacks on {m}")
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
            stage_line(progress, "attacks: inversion of the untrained and the original model (calibration)")
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
        stage_line(progress, f"warning: {path}: damaged ({e.__class__.__name__}); attacking again")
        return None
    if not isinstance(block, dict):
        stage_line(progress, f"warning: {path}: damaged (not an attack block); attacking again")
        return None
    return block
