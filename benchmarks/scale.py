"""Scale: peak memory of all processes and round time with 100, 1,000 and 10,000 simulated clients.

    python benchmarks/scale.py [--clients 100 1000 10000] [--backend ray] [--out benchmarks/results/scale.json]

Each size runs ``scripts/simulate.py`` in a fresh process on CIFAR-10 (IID partition, 10 clients per round, 3 rounds,
no deletion request) while this script samples, every 0.25 s, the proportional set size (PSS, from
``/proc/<pid>/smaps_rollup``) summed over the simulation's whole process tree: the driver, Ray's daemons and every
client actor. Prints the peak, the memory per extra client against the smallest size measured in the same
invocation, and the steady-state round time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def tree_pss(root: int) -> int:
    """Bytes of PSS summed over ``root`` and all its descendants."""
    kids = _children()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(kids.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def run_size(n: int, backend: str, workdir: Path) -> dict:
    scen = {
        "name": f"scale{n}",
        "data": {"dataset": "cifar10", "num_clients": n, "partition": {"kind": "iid"}},
        "model": {"arch": "small_cnn", "norm": "batch"},
        "federation": {
            "rounds": 3,
            "clients_per_round": 10,
            "local_epochs": 1,
            "batch_size": 16,
            "lr": 0.02,
            "backend": backend,
            "evaluate_every": 3,
            "round_timeout_s": 1800,
        },
    }
    path = workdir / f"scale{n}.yaml"
    path.write_text(yaml.safe_dump(scen))
    out = workdir / f"run{n}"
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0")
    t0, started = time.perf_counter(), time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "simulate.py"),
            str(path),
            "--out",
            str(out),
            "--no-cache",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss(proc.pid))
            time.sleep(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{n} clients: exit {proc.returncode}: {err.decode()[-500:]}")
    rounds = json.loads((out / "results.json").read_text())["pretrain"]["rounds"]
    log = (out / "log.txt").read_text()
    return {
        "clients": n,
        "peak_pss_bytes": peak[0],
        "process_wall_s": wall,
        "round_s": statistics.median(r["wall_s"] for r in rounds[1:]),
        "first_round_s": rounds[0]["wall_s"],
        "registered_s": registered_after(log, started),
        **node_map_seconds(log),
    }


def node_map_seconds(log: str) -> dict[str, float]:
    """The run's own split of the registration (``fed_opc.flower.discover_nodes``'s log line): seconds until every
    node was up (``nodes_up_s``) and for the map to partitions (``node_map_s``: a ``query.whoami`` round to every node,
    or the engine's registration order checked on a few nodes; ``node_map`` says which).
    """
    m = re.search(
        r"nodes up \((\d+\.\d) s\); node map (by one query\.whoami round|from the engine's).*?\((\d+\.\d) s\)", log
    )
    if not m:
        return {}
    how = "whoami round" if m.group(2).startswith("by") else "registration order, spot-checked"
    return {"nodes_up_s": float(m.group(1)), "node_map_s": float(m.group(3)), "node_map": how}


def registered_after(log: str, started: float) -> float | None:
    """Seconds from the process's launch (``started``, a ``time.time()``) to the run's "N clients registered" log
    line: the nodes are up and mapped to their partitions, and the first round starts next. Read from the log's
    timestamps (millisecond resolution); None without that line.
    """
    hit = next((ln for ln in log.splitlines() if "clients registered" in ln), None)
    if hit is None:
        return None
    return datetime.strptime(hit[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--backend", default="ray", choices=["ray", "inprocess"])
    p.add_argument("--out", default="benchmarks/results/scale.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.clients):
            rows.append(run_size(n, args.backend, Path(tmp)))
            r = rows[-1]
            print(
                f"{n:6d} clients: peak {r['peak_pss_bytes'] / 2**30:.2f} GiB, "
                f"registered after {r['registered_s'] if r['registered_s'] is not None else float('nan'):.1f} s "
                f"(nodes up {r.get('nodes_up_s', float('nan')):.1f} s, node map {r.get('node_map_s', float('nan')):.1f} s), "
                f"round {r['round_s']:.2f} s, process {r['process_wall_s']:.1f} s",
                flush=True,
            )
    base = rows[0]
    for r in rows[1:]:
        r["bytes_per_extra_client"] = (r["peak_pss_bytes"] - base["peak_pss_bytes"]) / (r["clients"] - base["clients"])
        print(
            f"{r['clients']} vs {base['clients']}: {r['bytes_per_extra_client'] / 1024:.1f} KiB per extra client, "
            f"round time x{r['round_s'] / base['round_s']:.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"backend": args.backend, "cpus": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
