"""Unlearning cost and quality: every federated and centralized method against ``fed_retrain``.

    python benchmarks/unlearning_cost.py [SCENARIO] [--out DIR] [--json benchmarks/results/unlearning_cost.json]

Runs the scenario (default ``scenarios/cifar10_100clients.yaml``: one class-scope and one client-scope request) with
``strategies.run.simulate`` (the pretraining cache is reused), then prints, per method: UA, RA, TA, MIA, Avg. Gap to
``fed_retrain`` (mean |method - fed_retrain| over UA, RA, TA, MIA), unlearning rounds, client samples, bytes, wall
time, and the ratios ``fed_retrain / method`` for client samples and bytes; and per request, each method's forget
accuracy (1 - UA on that request's own forget set) next to ``fed_retrain``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fed_opc.config import load_scenario  # noqa: E402
from strategies.run import simulate  # noqa: E402

GAP_KEYS = ("UA", "RA", "TA", "MIA")


def gap(m: dict, ref: dict) -> float | None:
    keys = [k for k in GAP_KEYS if k in m and k in ref]
    return sum(abs(m[k] - ref[k]) for k in keys) / len(keys) if len(keys) == len(GAP_KEYS) else None


def table(results: dict) -> tuple[list[dict], list[dict]]:
    methods = results["methods"]
    ref = methods.get("fed_retrain")
    rows = []
    for name, v in methods.items():
        m, c = v["metrics"], v["cost"]
        row = {"method": name, "setting": v["setting"], **{k: m.get(k) for k in GAP_KEYS}, "RTE_s": m.get("RTE_s")}
        row["gap_to_fed_retrain"] = gap(m, ref["metrics"]) if ref else None
        row |= {k: c.get(k) for k in ("rounds", "client_samples", "bytes_down", "bytes_up", "server_storage_bytes")}
        if ref and v["setting"] == "federated":
            rc = ref["cost"]
            row["samples_ratio"] = rc["client_samples"] / max(1, c["client_samples"])
            row["bytes_ratio"] = (rc["bytes_down"] + rc["bytes_up"]) / max(1, c["bytes_down"] + c["bytes_up"])
        rows.append(row)
    per_request = []
    for r in results["requests"]:
        entry = {"request": r["id"], "scope": r["scope"], "n_forget": r["n_forget"]}
        entry |= {m: 1.0 - v["UA"] for m, v in r.get("metrics", {}).items()}
        per_request.append(entry)
    return rows, per_request


def fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.1f}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", nargs="?", default="scenarios/cifar10_100clients.yaml")
    p.add_argument("--out", default=None, help="run directory (default: runs/<name>_cost)")
    p.add_argument("--json", default="benchmarks/results/unlearning_cost.json")
    p.add_argument("--from-run", help="tabulate the results.json of a finished run directory instead of running")
    args = p.parse_args()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.from_run:
        r = json.loads((Path(args.from_run) / "results.json").read_text())
    else:
        sc = load_scenario(args.scenario)
        r = simulate(sc, args.out or f"runs/{sc.name}_cost", progress=True).results
    rows, per_request = table(r)
    head = f"{'method':14s} {'setting':11s} {'UA':>6s} {'RA':>6s} {'TA':>6s} {'MIA':>6s} {'gap':>6s} {'rounds':>6s} {'samples':>9s} {'MB':>8s} {'wall s':>7s} {'x samples':>9s} {'x bytes':>8s}"
    print(head)
    for row in rows:
        mb = ((row["bytes_down"] or 0) + (row["bytes_up"] or 0)) / 1e6
        print(
            f"{row['method']:14s} {row['setting']:11s} "
            + " ".join(f"{fmt(row[k], True):>6s}" for k in (*GAP_KEYS, "gap_to_fed_retrain"))
            + f" {fmt(row['rounds']):>6s} {fmt(row['client_samples']):>9s} {mb:8.1f} {fmt(row['RTE_s']):>7s}"
            + f" {fmt(row.get('samples_ratio')):>9s} {fmt(row.get('bytes_ratio')):>8s}"
        )
    print("\nforget accuracy (%) per request")
    for e in per_request:
        print(
            f"{e['request']} ({e['scope']}, {e['n_forget']} samples): "
            + ", ".join(f"{k} {100 * v:.1f}" for k, v in e.items() if k not in ("request", "scope", "n_forget"))
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "scenario": args.scenario,
                "rows": rows,
                "per_request": per_request,
                "pretrain_final_test_acc": [x for x in r["pretrain"]["rounds"] if "test_acc" in x][-1]["test_acc"],
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
