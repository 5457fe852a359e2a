"""Data loading: what each process pays to get CIFAR-10, without and with the decoded-array cache.

    python benchmarks/data_load.py [--dataset cifar10] [--processes 3] [--out benchmarks/results/data_load.json]

Every measurement is a fresh Python process that imports fed-opc and calls ``load_dataset``, as the driver and each
Ray actor do. Three settings, measured in the same invocation:

- ``no cache`` (the baseline, what every process paid before the cache): the cache folder cannot be written, so each
  process checks the md5 sums and decodes the files into its own memory;
- ``cold cache``: the first process on a machine, which checks, decodes and writes the entry;
- ``warm cache``: every later process, which maps the entry.

It prints the load time (import excluded, median of ``--repeat`` processes) and, for ``--processes`` processes holding
the dataset at once (as the driver and the actors of a simulation do), the sum of their proportional set sizes (PSS,
``/proc/<pid>/smaps_rollup``) after each has touched every image: shared pages count once in that sum.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
sys.path.insert(0, {repo!r})
from fed_opc.data import load_dataset
t = time.perf_counter()
d = load_dataset({dataset!r}, cache_dir={cache!r})
load_s = time.perf_counter() - t
total = int(d.train.images.sum(dtype="uint64")) + int(d.test.images.sum(dtype="uint64"))  # touch every page
print(load_s, total, flush=True)
sys.stdin.readline()  # hold the arrays until the parent has read the PSS
"""


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss line for {pid}")


def run_processes(dataset: str, cache: str, n: int) -> tuple[list[float], float]:
    """Start ``n`` loading processes one after another, all alive at the end: (load seconds each, summed PSS GiB)."""
    procs, loads = [], []
    for _ in range(n):
        p = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(repo=str(REPO), dataset=dataset, cache=cache)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        loads.append(float(p.stdout.readline().split()[0]))
        procs.append(p)
    pss = sum(_pss_kib(p.pid) for p in procs) / 2**20
    for p in procs:
        p.communicate("\n", timeout=60)
    return loads, pss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10", choices=["cifar10", "mnist"])
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="processes whose load time is the median")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_load.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        blocked = Path(tmp) / "not-a-folder"
        blocked.write_text("a file where the cache folder would go: the cache cannot be written")
        cache = Path(tmp) / "cache"
        t = time.perf_counter()
        cold, _ = run_processes(args.dataset, str(cache), 1)
        rows = {
            "no cache (baseline)": run_processes(args.dataset, str(blocked), max(args.repeat, args.processes)),
            "cold cache (first process)": (cold, float("nan")),
            "warm cache": run_processes(args.dataset, str(cache), max(args.repeat, args.processes)),
        }
        wall = time.perf_counter() - t
    base = statistics.median(rows["no cache (baseline)"][0])
    base_pss = rows["no cache (baseline)"][1]
    print(f"{args.dataset}: load_dataset in a fresh process; PSS summed over {args.processes} processes alive at once")
    print(f"| setting | load (median) | load / baseline | PSS of {args.processes} processes | PSS / baseline |")
    print("| --- | --- | --- | --- | --- |")
    out = {"dataset": args.dataset, "processes": args.processes, "wall_s": wall, "rows": {}}
    for name, (loads, pss) in rows.items():
        med = statistics.median(loads)
        pss_cols = "– | –" if math.isnan(pss) else f"{pss:.2f} GiB | {pss / base_pss:.2f}"
        print(f"| {name} | {med:.3f} s | {med / base:.3f} | {pss_cols} |")
        out["rows"][name] = {"load_s": loads, "pss_gib": None if math.isnan(pss) else pss}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
