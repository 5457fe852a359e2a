"""Simulation overhead: the same FedAvg training through a bare PyTorch loop, the in-process grid and Ray.

    python benchmarks/sim_overhead.py [--clients 100] [--per-round 10] [--rounds 20] [--out benchmarks/results/sim_overhead.json]

All three compute the same thing: the same seeded client sampling, partitions, local epochs and per-client generators
(the in-process grid and Ray give bit-identical models; the bare loop uses the same training loop). Central
evaluation is left out of the timed rounds. Prints wall time per round (steady state: median of rounds 2..N) and per
run (process work from start to result, including Ray's start and stop), and the ratios against the bare loop measured
in the same invocation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fed_opc.config import parse_scenario  # noqa: E402
from fed_opc.data.scenario_data import prepare  # noqa: E402
from fed_opc.losses import cross_entropy  # noqa: E402
from fed_opc.models import new_model  # noqa: E402
from fed_opc.rng import numpy_rng  # noqa: E402
from fed_opc.train import OptimConfig, make_optimizer, supervised_batches, train_loop  # noqa: E402
from strategies.fedavg import sample_clients  # noqa: E402


def scenario(clients: int, per_round: int, rounds: int, backend: str, dataset: str):
    return parse_scenario(
        {
            "name": f"bench_{backend}",
            "seed": 0,
            "data": {"dataset": dataset, "num_clients": clients, "partition": {"kind": "dirichlet", "alpha": 0.5}},
            "model": {"arch": "small_cnn"},
            "federation": {
                "rounds": rounds,
                "clients_per_round": per_round,
                "local_epochs": 1,
                "batch_size": 32,
                "lr": 0.05,
                "backend": backend,
                "evaluate_every": rounds + 1,
            },
        }
    )


def bare_loop(sc, threads: int) -> dict:
    """FedAvg by hand: no Flower, no Ray, one process."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    sd = prepare(sc)
    fed = sc.federation
    glob = new_model(sc, sd).state_dict()
    model = new_model(sc, sd)
    per_round = []
    for rnd in range(1, fed.rounds + 1):
        t = time.perf_counter()
        states, weights = [], []
        for pid in sample_clients(sc.seed, rnd, range(sd.num_clients), fed.clients_per_round):
            model.load_state_dict(glob, strict=True)
            idx = sd.partitions[pid]
            opt = make_optimizer(model.parameters(), OptimConfig(fed.lr, fed.momentum, fed.weight_decay))
            rng = numpy_rng(sc.seed, "client_train/pretrain", rnd, pid)
            train_loop(
                model, cross_entropy, supervised_batches(sd.data.train, idx, fed.batch_size, fed.local_epochs, rng), opt
            )
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            weights.append(len(idx))
        total = sum(weights)
        glob = {k: sum(s[k] * (w / total) for s, w in zip(states, weights)) for k in glob}
        per_round.append(time.perf_counter() - t)
    return {"run_s": time.perf_counter() - t0, "rounds_s": per_round}


def engine(sc, out: Path) -> dict:
    from strategies.run import simulate

    t0 = time.perf_counter()
    r = simulate(sc, out, use_cache=False)
    run_s = time.perf_counter() - t0
    return {"run_s": run_s, "rounds_s": [x["wall_s"] for x in r.results["pretrain"]["rounds"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--out", default="benchmarks/results/sim_overhead.json")
    args = p.parse_args()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "fed_opc_bench"
    base = scenario(args.clients, args.per_round, args.rounds, "inprocess", args.dataset)
    prepare(base)  # load the data once, outside every timed section
    rows = {
        "a_bare_loop_2threads": bare_loop(base, 2),
        "a1_bare_loop_1thread": bare_loop(base, 1),
        "b_inprocess_grid": engine(base, tmp / "inprocess"),
        "c_ray": engine(
            dataclasses.replace(base, federation=dataclasses.replace(base.federation, backend="ray")), tmp / "ray"
        ),
    }
    a = rows["a_bare_loop_2threads"]
    steady = lambda r: statistics.median(r["rounds_s"][1:]) if len(r["rounds_s"]) > 1 else r["rounds_s"][0]  # noqa: E731
    print(f"{args.clients} clients, {args.per_round} per round, {args.rounds} rounds, {args.dataset}")
    print(f"{'engine':24s} {'round (steady)':>15s} {'run':>9s} {'round/a':>8s} {'run/a':>7s}")
    for name, r in rows.items():
        print(
            f"{name:24s} {steady(r):13.3f} s {r['run_s']:7.1f} s {steady(r) / steady(a):8.3f} {r['run_s'] / a['run_s']:7.3f}"
        )
        r["steady_round_s"] = steady(r)
        r["round_ratio_vs_a"] = steady(r) / steady(a)
        r["run_ratio_vs_a"] = r["run_s"] / a["run_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
