"""The depth / utility front of OPC variants measured by ``benchmarks/opc_depth.py``: a markdown table and a plot.

Reads the rows that ``opc_depth.py`` prints (one JSON object per line; its ``--out`` file works too), from one or
more files, and the ``opc`` / ``fed_opc`` / retrain results of run directories (``scripts/simulate.py`` output).
Depth is the larger normalised recovery of ``fm`` and ``hr`` (0 = the constant-predictor floor, 1 = the original
model); utility is TA on the retained classes. A row is on the front when no other non-collapsed row is at least as
deep and at least as accurate, and strictly better in one (recovery below 0 counts as 0). Collapsed rows are marked
and never on the front. In the plot, circles are centralized OPC (dark: on the front), triangles federated OPC,
squares the retrain references, crosses collapsed models.

Example::

    .venv/bin/python benchmarks/opc_front.py docs/data/opc_front_paper.jsonl --plot docs/img/opc_front_paper.png
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def metric_columns(met: dict) -> dict:
    """A row's utility and contraction columns from a method's metrics block (``evaluate_outputs``)."""
    forget, retain = met["forget_feature_norm"], met["retain_feature_norm"]
    return {
        "TA": met["TA"],
        "UA": met["UA"],
        "norm_ratio": forget / retain if retain else None,
        "forget_norm": forget,
        "retain_norm": retain,
        "collapsed": bool(met.get("collapsed")),
    }


# (unlearning.fed_opc key, default, label) of the settings a federated row names when they are not the default
FED_KNOBS = (
    ("server_momentum", 0.0, "server momentum"),
    ("server_lr", 1.0, "server lr"),
    ("batch_norm", "batch", "batch norm"),
    ("lr", None, "lr"),
    ("forget_batch_size", 32, "forget batch"),
    ("max_requesters", None, "requesters"),
    ("retain_clients", None, "retain clients"),
)


def run_rows(run: Path) -> list[dict]:
    """One row per OPC method (labelled by its setting) and retrain reference of a run directory."""
    import yaml

    res = json.loads((run / "results.json").read_text())
    params = yaml.safe_load((run / "scenario.yaml").read_text())["unlearning"]
    rows = []
    for name, m in res["methods"].items():
        if name not in ("opc", "fed_opc", "retrain", "fed_retrain"):
            continue
        p = params.get(name, {})
        epochs = p.get("epochs", p.get("local_epochs"))
        label = name
        if name in ("opc", "fed_opc"):
            label += f", lambda {p['lambda']:g}" + (f", {epochs:g} ep" if epochs is not None else "")
        if name == "fed_opc":
            label += f", {m['cost']['rounds']} rounds"
            # the fedavg protocol's settings that differ from their defaults
            # runs recorded before fedavg read `lr` list two_phase's lr (0.01) and momentum there; fedavg ignored them
            ignored = {"lr"} if p.get("protocol") == "fedavg" and p.get("momentum") is not None else set()
            for key, default, text in FED_KNOBS:
                if key not in ignored and p.get(key) not in (None, default):
                    label += f", {text} {p[key]:g}" if isinstance(p[key], (int, float)) else f", {text} {p[key]}"
        rec = m["attacks"]["recovery"]
        rows.append(
            {"variant": label}
            | metric_columns(m["metrics"])
            | {
                "fm_rec": rec["fm"].get("recovery"),
                "hr_rec": rec["hr"].get("recovery"),
                "client_samples": m["cost"]["client_samples"],
            }
        )
    return rows


def read_rows(paths: list[Path]) -> list[dict]:
    rows: list[dict] = []
    for p in paths:
        if p.is_dir():
            rows.extend(run_rows(p))
            continue
        text = p.read_text()
        if text.lstrip().startswith("["):
            rows.extend(json.loads(text))
            continue
        rows.extend(json.loads(line) for line in text.splitlines() if line.startswith("{"))
    seen: dict[str, dict] = {}
    for r in rows:  # a variant measured twice: the last measurement
        seen[r["variant"]] = r
    return list(seen.values())


def depth(r: dict) -> float | None:
    vals = [r[k] for k in ("fm_rec", "hr_rec") if r.get(k) is not None]
    return max(vals) if vals else None


def on_front(rows: list[dict]) -> set[str]:
    """Variants no other non-collapsed variant dominates; recovery below the floor counts as the floor (0)."""
    cand = [r for r in rows if depth(r) is not None and not r.get("collapsed")]

    def d(r: dict) -> float:
        return max(depth(r), 0.0)

    front = set()
    for r in cand:
        dominated = any(
            d(o) <= d(r) and o["TA"] >= r["TA"] and (d(o) < d(r) or o["TA"] > r["TA"]) for o in cand if o is not r
        )
        if not dominated:
            front.add(r["variant"])
    return front


def table(rows: list[dict]) -> str:
    front = on_front(rows)
    head = (
        "| variant | TA | fm recovery | hr recovery | forget norm | retain norm | collapsed | client samples | front |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]

    def fmt(x: float | None, spec: str = ".3f") -> str:
        return "-" if x is None else format(x, spec)

    for r in sorted(rows, key=lambda r: (depth(r) is None, depth(r) if depth(r) is not None else 0.0)):
        lines.append(
            f"| {r['variant']} | {fmt(r.get('TA'))} | {fmt(r.get('fm_rec'), '.2f')} | {fmt(r.get('hr_rec'), '.2f')} | "
            f"{fmt(r.get('forget_norm'), '.2f')} | {fmt(r.get('retain_norm'), '.2f')} | "
            f"{'yes' if r.get('collapsed') else 'no'} | {fmt(r.get('client_samples'), ',')} | "
            f"{'yes' if r['variant'] in front else ''} |"
        )
    return "\n".join(lines)


def short(label: str) -> str:
    """A plot label: the setting without the defaults' words."""
    for word in (", absolute", ", bn batch", ", penultimate", ", 1 ep, relative"):
        label = label.replace(word, ", relative" if "relative" in word else "")
    for long, brief in (("fed_opc, ", "fed "), ("lambda ", "\u03bb"), (" rounds", " r"), ("server momentum", "srv mom"),
                        ("batch norm frozen", "BN frozen"), ("forget batch ", "fb"), ("requesters ", "req"),
                        ("server lr ", "srv lr "), (" ep", "ep")):  # fmt: skip
        label = label.replace(long, brief)
    return label


def plot(rows: list[dict], path: Path, xmin: float = -0.5) -> None:
    """Depth (x, clipped at ``xmin``: rows further left are drawn at the edge) against TA on retained classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = on_front(rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    seen: set[str] = set()
    for r in rows:
        d = depth(r)
        if d is None:
            if r["variant"] == "original":
                ax.axhline(r["TA"], color="grey", ls=":", lw=1, label="original model TA")
            continue
        fed = r["variant"].startswith("fed_opc")
        ref = r["variant"].startswith(("retrain", "fed_retrain"))
        if r.get("collapsed"):
            kind, marker, color = "collapsed", "x", "tab:red"
        elif ref:
            kind, marker, color = "retrain reference", "s", "black"
        elif fed:
            kind, marker, color = "federated OPC", "^", "tab:orange"
        elif r["variant"] in front:
            kind, marker, color = "centralized OPC, on the front", "o", "tab:blue"
        else:
            kind, marker, color = "centralized OPC", "o", "lightsteelblue"
        x = max(d, xmin + 0.03)
        ax.scatter(x, r["TA"], marker=marker, color=color, s=32, label=None if kind in seen else kind, zorder=3)
        seen.add(kind)
        if kind != "centralized OPC":
            ax.annotate(short(r["variant"]), (x, r["TA"]), fontsize=6, xytext=(4, -2), textcoords="offset points")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.axvline(0.10, color="tab:green", ls="--", lw=0.8, label="deep (<= 0.10)")
    ax.set_xlim(xmin, 1.15)
    ax.set_xlabel(f"normalised recovery, max of fm and hr (0 = floor, 1 = original; below {xmin:g} drawn at the edge)")
    ax.set_ylabel("TA on retained classes")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--match", default=None, help="keep only rows whose label matches this regular expression")
    p.add_argument("--jsonl", type=Path, default=None, help="also write the rows, one JSON object per line")
    args = p.parse_args()
    rows = read_rows(args.files)
    if args.match:
        rows = [r for r in rows if re.search(args.match, r["variant"])]
    print(table(rows))
    if args.jsonl:
        args.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
