"""One method's settings measured over several seeds: each variant of ``unlearning.<method>`` on a scenario.

For every variant the scenario is run with ``methods: [<method>]`` and the variant's keys set in its
``unlearning.<method>`` block (the other keys as the scenario has them), the frozen recovery read-outs (``fm``,
``hr``, ``probe``, ``prototype``) and no inversion, on the in-process grid; each ``--references`` method is run once
the same way, at the scenario's settings. Pretraining comes from the cache after the first run of a seed. One row per
variant and seed: UA, RA, TA on the retained classes, whether the collapse rule fired (and how many classes the model
still predicts), each read-out's normalised recovery and the client samples; then the mean +- std (ddof 1) over the
seeds.

    python benchmarks/variant_seeds.py scenarios/cifar10_100clients.yaml --method fed_eraser \\
        --variants calibration=model calibration=layer --seeds 0 1 2 --out runs/fed_eraser_calibration

A variant is ``key=value[,key=value...]`` (values read as YAML); ``--set key.path=value`` changes the scenario for
every run (for instance ``federation.evaluate_every=2``). ``--rows FILE`` prints the table of an earlier run's
``rows.json`` instead of running.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from strategies.reporting.summary import stats  # noqa: E402

READ_OUTS = ("fm", "hr", "probe", "prototype")


def parse_assignments(text: str) -> dict:
    """``a=1,b.c=x`` -> {"a": 1, "b.c": "x"}, each value read as YAML."""
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise SystemExit(f"variant_seeds: {part!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def set_path(d: dict, dotted: str, value) -> None:
    """``d[a][b] = value`` for ``dotted`` = ``a.b``, creating the blocks on the way."""
    *head, last = dotted.split(".")
    for k in head:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[last] = value


def derived_scenario(base: dict, method: str, keys: dict, label: str, overrides: dict) -> dict:
    """``base`` with ``method`` alone, its block updated by ``keys``, attacked by the frozen read-outs only."""
    sc = json.loads(json.dumps(base))
    for path, value in overrides.items():
        set_path(sc, path, value)
    un = sc.setdefault("unlearning", {})
    un["methods"] = [method]
    if keys:
        un[method] = dict(un.get(method) or {}) | keys
    sc["attacks"] = {"recovery": list(READ_OUTS), "k_shot": (base.get("attacks") or {}).get("k_shot", 10)}
    set_path(sc, "federation.backend", "inprocess")
    name = f"{sc.get('name', 'scenario')}_{label}"
    # a scenario name has at most 64 characters: a long one keeps its start and a hash of the whole
    sc["name"] = name if len(name) <= 64 else f"{name[:55]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return sc


def row_of(results: dict, method: str, label: str, seed: int) -> dict:
    """One table row from a seed's ``results.json``."""
    m = results["methods"][method]
    met, rec = m["metrics"], m["attacks"]["recovery"]
    row = {"variant": label, "seed": seed}
    row |= {k: met[k] for k in ("UA", "RA", "TA", "n_predicted_classes")} | {"collapsed": bool(met["collapsed"])}
    row |= {f"{a}_rec": rec[a]["recovery"] if a in rec else None for a in READ_OUTS}
    row["client_samples"] = m["cost"]["client_samples"]
    return row


def label_of(method: str, keys: dict) -> str:
    """``fed_opc_lambda=3`` for method ``fed_opc`` with keys {"lambda": 3}; the method's name without keys."""
    return method + ("".join(f"_{k}={v}" for k, v in keys.items()) if keys else "")


def run(
    scenario: Path, method: str, variants: list[dict], references: list[str], seeds: list[int], out: Path, overrides
) -> list[dict]:
    """Run the scenario once per variant and reference method (all seeds); return the rows."""
    base = yaml.safe_load(scenario.read_text())
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for m, keys in [(method, v) for v in variants] + [(r, {}) for r in references]:
        label = label_of(m, keys)
        slug = label.replace("=", "-")  # a scenario name and a folder name
        path = out / f"{slug}.yaml"
        path.write_text(yaml.safe_dump(derived_scenario(base, m, keys, slug, overrides), sort_keys=False))
        run_dir = out / slug
        cmd = [sys.executable, str(ROOT / "scripts" / "simulate.py"), str(path), "--out", str(run_dir)]
        cmd += ["--seeds", *map(str, seeds), "--no-progress", "--no-report"]
        cmd += ["--resume"] if run_dir.exists() else []
        subprocess.run(cmd, check=True, env=os.environ.copy())
        for s in seeds:
            results = json.loads((run_dir / f"seed_{s}" / "results.json").read_text())
            rows.append(row_of(results, m, label, s))
        (out / "rows.json").write_text(json.dumps(rows, indent=1))
    return rows


def table(rows: list[dict]) -> str:
    """The per-seed rows, then mean +- std per variant, as markdown."""

    def f(v) -> str:
        return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    cols = ["UA", "RA", "TA", *[f"{a}_rec" for a in READ_OUTS]]
    head = "| variant | seed | " + " | ".join(cols) + " | predicted classes | collapsed | client samples |"
    lines = [head, "|" + " --- |" * (len(cols) + 5)]
    for r in rows:
        vals = " | ".join(f(r[c]) for c in cols)
        lines.append(
            f"| {r['variant']} | {r['seed']} | {vals} | {r['n_predicted_classes']} | "
            f"{'yes' if r['collapsed'] else 'no'} | {r['client_samples']:,} |"
        )
    for label in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == label]
        cells = []
        for c in cols:
            vals = [r[c] for r in rs if r[c] is not None]
            st = stats(vals) if vals else None
            cells.append(f"{st['mean']:.3f} +- {st['std']:.3f}" if st else "–")
        n_col = sum(r["collapsed"] for r in rs)
        samples = stats([float(r["client_samples"]) for r in rs])["mean"]
        lines.append(f"| **{label}** | mean | " + " | ".join(cells) + f" | – | {n_col}/{len(rs)} | {samples:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", type=Path, nargs="?")
    ap.add_argument("--method", help="the method whose unlearning block the variants set")
    ap.add_argument("--variants", nargs="*", default=[], help="key=value[,key=value...] per variant")
    ap.add_argument("--references", nargs="*", default=[], help="methods run once at the scenario's settings")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="key.path=value for every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/variant_seeds"))
    ap.add_argument("--rows", type=Path, help="print the table of an earlier run's rows.json instead of running")
    a = ap.parse_args()
    if a.rows is not None:
        rows = json.loads(a.rows.read_text())
    elif a.scenario is None or (a.method is None and not a.references):
        ap.error("a scenario with --method (or --references), or --rows, is required")
    else:
        variants = [parse_assignments(v) for v in a.variants] or ([{}] if a.method else [])
        overrides = {}
        for o in a.overrides:
            overrides |= parse_assignments(o)
        rows = run(a.scenario, a.method, variants, a.references, a.seeds, a.out, overrides)
    print(table(rows))


if __name__ == "__main__":
    main()
