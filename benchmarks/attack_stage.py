"""The attack stage, its tasks one after another against side by side: the product's ``attack_all`` on a scenario's
real data, forget set and model, with ``attacks.workers`` 1 and then N, in one run.

    python benchmarks/attack_stage.py scenarios/cifar10_100clients.yaml --methods 4 --iterations 200 --workers 2

Every "method" is a copy of the same model (the scenario's seeded initial model, or ``--state``: a fed-opc checkpoint
such as a run's ``checkpoints/pretrain.ckpt``): an attack's cost does not depend on the weights it attacks, so the
stage's cost is that of a run with as many methods. The scenario's attacks run as set, except the inversion's
iterations (``--iterations``; the scenarios' 2,000 take about 1.5 minutes per method on one core; 0: recovery
attacks only). Prints the stage's wall seconds for each worker count, their ratio, and whether both gave the same
blocks (they must).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fed_opc.config import load_scenario  # noqa: E402
from fed_opc.data.forget import union_forget  # noqa: E402
from fed_opc.data.scenario_data import forgotten_classes, prepare  # noqa: E402
from fed_opc.models import new_model  # noqa: E402
from strategies.run.attacks import attack_all  # noqa: E402


def stage(sc, sd, model, names, forget, classes, workers: int) -> tuple[float, dict]:
    """One attack stage with ``workers`` workers in a fresh folder: (wall seconds, the results it filled in)."""
    att = dataclasses.replace(sc.attacks, workers=workers)
    sc = dataclasses.replace(sc, attacks=att)
    results = {"methods": {m: {} for m in names}, "timing": {}}
    with tempfile.TemporaryDirectory() as d:
        ck = Path(d) / "checkpoints"
        ck.mkdir()
        t = time.perf_counter()
        attack_all(sc, sd, model, {m: model for m in names}, forget, classes, {}, ck, results, False)
        return time.perf_counter() - t, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario")
    p.add_argument("--methods", type=int, default=4, help="how many methods' models to attack")
    p.add_argument("--iterations", type=int, default=200, help="inversion iterations per restart (0: no inversion)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="the side-by-side worker count")
    p.add_argument("--state", default=None, help="attack this model state (a fed-opc checkpoint) instead")
    args = p.parse_args()
    sc = load_scenario(args.scenario)
    inv = sc.attacks.inversion
    inv = (
        dataclasses.replace(inv, iterations=args.iterations)
        if args.iterations
        else dataclasses.replace(inv, targets=())
    )
    sc = dataclasses.replace(sc, attacks=dataclasses.replace(sc.attacks, inversion=inv))
    sd = prepare(sc)
    model = new_model(sc, sd)
    if args.state:
        from fed_opc.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(Path(args.state))["state"], strict=True)
    forget = union_forget(sd.requests)
    classes = forgotten_classes(sc)
    names = [f"method{i}" for i in range(args.methods)]
    inversion = (
        f"inversion {list(inv.targets)} x {inv.images} images x {inv.iterations} iterations x {inv.restarts} restarts"
        if inv.targets
        else "no inversion"
    )
    print(f"{sc.name}: {len(names)} methods; recovery {list(sc.attacks.recovery)}, {inversion}", flush=True)
    t1, r1 = stage(sc, sd, model, names, forget, classes, 1)
    print(f"  1 worker:  {t1:7.1f} s", flush=True)
    tn, rn = stage(sc, sd, model, names, forget, classes, args.workers)
    print(f"  {args.workers} workers: {tn:7.1f} s  ({tn / t1:.2f}x the 1-worker stage)", flush=True)
    drop = {"timing"}
    same = json.dumps({k: v for k, v in r1.items() if k not in drop}, sort_keys=True) == json.dumps(
        {k: v for k, v in rn.items() if k not in drop}, sort_keys=True
    )
    tasks = rn["timing"]["attack_tasks"]
    print(f"  task seconds with {args.workers} workers: " + ", ".join(f"{k} {v:.1f}" for k, v in tasks.items()))
    print(f"  same blocks: {same}")


if __name__ == "__main__":
    main()
