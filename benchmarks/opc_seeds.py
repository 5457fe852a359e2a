"""OPC variants over several seeds: ``opc_depth.py`` rows of one pretrained model per seed, read side by side.

Each input file is one seed's ``opc_depth.py`` output (its ``--out`` JSON list, or the JSON lines it prints), in seed
order. Per variant (and reference method) the table gives TA on the retained classes and each read-out's normalised
recovery as mean +- std (sample std) over the seeds, the strongest frozen read-out (the largest of ``fm``, ``hr``,
``probe``, ``prototype`` that were run: what the report's verdict reads) on each seed, and on how many seeds the
variant is deep and how many it is at most ``LIKE_RETRAIN_TOL`` above the ``retrain`` row of the same seed on every
read-out, with the report's thresholds (``strategies.reporting.depth``). A variant counts as deep on a seed only when
it is not collapsed there.

    python benchmarks/opc_seeds.py runs/front_seed0.json runs/front_seed1.json runs/front_seed2.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opc_front import read_rows  # noqa: E402

from strategies.reporting.depth import DEEP_MAX, LIKE_RETRAIN_TOL, VERDICT_ATTACKS  # noqa: E402
from strategies.reporting.summary import stats  # noqa: E402


def strongest(row: dict) -> float | None:
    """The largest normalised recovery among the verdict's read-outs present in ``row``."""
    vals = [row[f"{a}_rec"] for a in VERDICT_ATTACKS if row.get(f"{a}_rec") is not None]
    return max(vals) if vals else None


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; 0.0 for one value), as the multi-seed summary computes them."""
    st = stats(xs)
    return st["mean"], st["std"]


def summarise(seeds: list[list[dict]]) -> list[dict]:
    """One summary per label present on every seed, in the first seed's order."""
    by_seed = [{r["variant"]: r for r in rows} for rows in seeds]
    labels = [r["variant"] for r in seeds[0] if all(r["variant"] in s for s in by_seed)]
    out = []
    for label in labels:
        rows = [s[label] for s in by_seed]
        entry: dict = {"variant": label, "n": len(rows), "TA": mean_std([r["TA"] for r in rows])}
        for a in VERDICT_ATTACKS:
            vals = [r.get(f"{a}_rec") for r in rows]
            if all(v is not None for v in vals):
                entry[a] = mean_std(vals)
        entry["strongest"] = [strongest(r) for r in rows]
        entry["collapsed"] = sum(bool(r.get("collapsed")) for r in rows)
        entry["deep"] = sum(
            1 for r, x in zip(rows, entry["strongest"]) if x is not None and x <= DEEP_MAX and not r.get("collapsed")
        )
        like = 0
        for r, s in zip(rows, by_seed):
            ref = s.get("retrain")
            if ref is None or label == "retrain":
                continue
            gaps = [
                r[f"{a}_rec"] - ref[f"{a}_rec"]
                for a in VERDICT_ATTACKS
                if r.get(f"{a}_rec") is not None and ref.get(f"{a}_rec") is not None
            ]
            like += bool(gaps) and max(gaps) <= LIKE_RETRAIN_TOL and not r.get("collapsed")
        entry["like_retrain"] = like if all("retrain" in s for s in by_seed) else None
        out.append(entry)
    return out


def table(entries: list[dict]) -> str:
    present = [a for a in VERDICT_ATTACKS if any(a in e for e in entries)]
    head = ["variant", "TA", *present, "strongest per seed", "deep", "<= retrain + 0.10", "collapsed"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for e in entries:
        n = e["n"]
        cells = [e["variant"], "{:.3f} +- {:.3f}".format(*e["TA"])]
        cells += ["{:.2f} +- {:.2f}".format(*e[a]) if a in e else "–" for a in present]
        cells.append(" / ".join("–" if x is None else f"{x:.2f}" for x in e["strongest"]))
        cells.append(f"{e['deep']}/{n}")
        cells.append("–" if e["like_retrain"] is None or e["variant"] == "retrain" else f"{e['like_retrain']}/{n}")
        cells.append(f"{e['collapsed']}/{n}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="one opc_depth.py output per seed, in seed order")
    args = p.parse_args()
    seeds = [read_rows([f]) for f in args.files]
    print(table(summarise(seeds)))


if __name__ == "__main__":
    main()
