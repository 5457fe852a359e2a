"""GPU actors: throughput of the GPU scenario with 1, 4 and 8 client actors sharing one GPU.

    python benchmarks/gpu.py [--scenario scenarios/cifar10_100clients_gpu.yaml] [--actors 1 4 8] [--rounds 3]

For each actor count ``k`` the scenario's pretraining runs with ``client_resources.num_gpus = 1 / k`` (and one CPU per
actor, so the machine needs at least ``k`` CPUs for ``k`` actors), ``--rounds`` rounds, without requests. Prints
client samples per second (all actors together) and the peak GPU memory in use (``nvidia-smi``, sampled every
0.5 s), with the ratios against one actor measured in the same invocation. Refuses on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def gpu_memory_used_mib() -> int:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(x) for x in out.split())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="scenarios/cifar10_100clients_gpu.yaml")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
        print(
            "error: benchmarks/gpu.py needs a visible NVIDIA GPU (torch.cuda.is_available() is False here)",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from fed_opc.config import load_scenario
    from strategies.run import simulate

    base = load_scenario(args.scenario)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.actors:
            fed = dataclasses.replace(
                base.federation,
                rounds=args.rounds,
                evaluate_every=args.rounds,
                client_resources=dataclasses.replace(base.federation.client_resources, num_cpus=1.0, num_gpus=1.0 / k),
            )
            sc = dataclasses.replace(
                base,
                name=f"gpu{k}",
                federation=fed,
                requests=(),
                unlearning=dataclasses.replace(base.unlearning, methods=(), params={}),
            )
            peak, done = [0], threading.Event()

            def sample(peak: list[int] = peak, done: threading.Event = done) -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], gpu_memory_used_mib())
                    time.sleep(0.5)

            th = threading.Thread(target=sample, daemon=True)
            th.start()
            t0 = time.perf_counter()
            r = simulate(sc, Path(tmp) / f"run{k}", use_cache=False).results
            wall = time.perf_counter() - t0
            done.set()
            th.join()
            rounds = r["pretrain"]["rounds"]
            train_s = sum(x["wall_s"] for x in rounds[1:]) or rounds[0]["wall_s"]
            samples = r["pretrain"]["cost"]["client_samples"] * (len(rounds) - 1) / max(1, len(rounds))
            rows.append(
                {
                    "actors": k,
                    "num_gpus": 1.0 / k,
                    "samples_per_s": samples / train_s,
                    "peak_gpu_mib": peak[0],
                    "process_s": wall,
                }
            )
            print(f"{k} actors: {rows[-1]['samples_per_s']:.0f} samples/s, peak GPU memory {peak[0]} MiB", flush=True)
    for row in rows:
        row["throughput_vs_1"] = row["samples_per_s"] / rows[0]["samples_per_s"]
        print(f"{row['actors']} actors: x{row['throughput_vs_1']:.2f} throughput, {row['peak_gpu_mib']} MiB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"scenario": args.scenario, "gpu": torch.cuda.get_device_name(0), "rows": rows}, indent=2)
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
