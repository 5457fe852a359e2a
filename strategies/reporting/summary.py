"""Multi-seed summaries: ``summary.json``, ``summary.md`` and ``summary.csv`` from the ``results.json`` of every seed.

``summarize`` mirrors the shape of ``results.json`` and replaces every number by ``{"mean", "std", "n"}``:

- ``std`` is the sample standard deviation (ddof = 1) over the ``n`` seeds that hold the value, and 0.0 when n = 1;
- a value absent from some seeds is averaged over the seeds that have it (``n`` says how many);
- strings (a method's ``setting``) are kept when every seed agrees, else listed;
- numeric lists (``relearn.steps``) are summarised element by element; lists of records (per-round diagnostics,
  per-image inversion results) have no per-seed value to average and stay in each seed's ``results.json``.

Requests are matched across seeds by id; ``pretrain.final_test_acc`` is the test accuracy of the last evaluated
pretraining round of each seed, and ``pretrain.rounds`` summarises the learning curve round by round.

A multi-seed run directory holds ``summary.json`` (and .md, .csv) next to one ``seed_<seed>/`` run directory per seed::

    python -m strategies.reporting.summary runs/cifar10_100clients   # (re)build the summary from seed_*/results.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from strategies.reporting.depth import depth_section
from strategies.reporting.document import Heading, Para, Table, to_markdown
from strategies.reporting.tables import headline_table, inversion_table, per_request_table, recovery_table
from strategies.reporting.values import dig, flatten_method, fmt, method_order, number, request_values

SCHEMA_VERSION = 2
STD_NOTE = "sample standard deviation (ddof=1) over the n seeds holding the value; 0.0 when n = 1"


def stats(values: Sequence[float]) -> dict[str, float | int]:
    """``{"mean", "std", "n"}`` of ``values``: sample std (ddof = 1), 0.0 for a single value."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("stats of no value")
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float))  # bools are ints: a 0/1 flag averages to a share of seeds


def _merge(values: list[Any]) -> Any:
    """Summarise the values one key takes across seeds (absent seeds already left out); None drops the key."""
    if not values:
        return None
    if all(_is_num(v) for v in values):
        return stats(values)
    if all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        out = {}
        for k in keys:
            merged = _merge([v[k] for v in values if k in v])
            if merged is not None:
                out[k] = merged
        return out or None
    if all(isinstance(v, list) and all(_is_num(x) for x in v) for v in values):
        length = max(len(v) for v in values)
        return [stats([v[i] for v in values if i < len(v)]) for i in range(length)] or None
    if all(isinstance(v, str) for v in values):
        distinct = list(dict.fromkeys(values))
        return distinct[0] if len(distinct) == 1 else distinct
    return None


def _final_test_acc(results: dict[str, Any]) -> float | None:
    accs = [number(dig(r, "test_acc")) for r in dig(results, "pretrain", "rounds") or []]
    accs = [a for a in accs if a is not None]
    return accs[-1] if accs else None


def _pretrain(seed_results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    finals = [a for a in map(_final_test_acc, seed_results) if a is not None]
    if finals:
        out["final_test_acc"] = stats(finals)
    by_round: dict[Any, list[dict[str, Any]]] = {}
    for res in seed_results:
        for r in dig(res, "pretrain", "rounds") or []:
            if isinstance(r, dict) and "round" in r:
                by_round.setdefault(r["round"], []).append(r)
    rounds = []
    for rnd, recs in sorted(by_round.items(), key=lambda kv: number(kv[0]) or 0.0):
        entry: dict[str, Any] = {"round": rnd}
        for key in ("test_acc", "test_loss", "train_loss", "wall_s"):
            xs = [r[key] for r in recs if _is_num(r.get(key))]
            if xs:
                entry[key] = stats(xs)
        rounds.append(entry)
    if rounds:
        out["rounds"] = rounds
    cost = _merge([c for c in (dig(r, "pretrain", "cost") for r in seed_results) if isinstance(c, dict)])
    if cost:
        out["cost"] = cost
    cached = [bool(dig(r, "pretrain", "cached")) for r in seed_results if dig(r, "pretrain", "cached") is not None]
    if cached:
        out["cached"] = stats(cached)  # the share of seeds that reused a cached pretraining
    return out


def _requests(seed_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for res in seed_results:
        for r in res.get("requests") or []:
            if isinstance(r, dict) and "id" in r:
                by_id.setdefault(str(r["id"]), []).append(r)
    out = []
    for rid, recs in by_id.items():
        first = recs[0]
        # what the scenario fixed is described once; what the seed draws (the forget set's size) is summarised
        entry: dict[str, Any] = {"id": rid}
        entry |= {k: first[k] for k in ("client", "scope", "round", "classes", "clients") if k in first}
        entry["n_seeds"] = len(recs)
        for key in ("n_forget", "status", "metrics"):
            merged = _merge([r[key] for r in recs if key in r])
            if merged is not None:
                entry[key] = merged
        out.append(entry)
    return out


def summarize(seed_results: list[dict]) -> dict:
    """Mean, std and count of every numeric value over the per-seed ``results.json`` contents.

    Parameters
    ----------
    seed_results : the ``results.json`` content of each seed's run, all of one scenario.

    Returns
    -------
    ``summary.json`` content: ``{"schema_version", "kind": "summary", "scenario", "seeds", "n_seeds", "std",
    "pretrain": {"final_test_acc", "rounds", "cost", "cached"}, "requests": [...], "methods": {...},
    "inversion_reference": {...}, "wall_s"}`` where every number of the methods, requests and inversion reference
    blocks is ``{"mean", "std", "n"}`` (see the module docstring; a flag such as ``informative`` counts as 0 / 1).

    Raises
    ------
    ValueError : no results, or results of different scenarios.

    """
    if not seed_results:
        raise ValueError("summarize needs the results of at least one seed")
    if not all(isinstance(r, dict) for r in seed_results):
        raise ValueError("summarize: every seed's results must be a dict (the content of results.json)")
    names = list(dict.fromkeys(str(r.get("scenario")) for r in seed_results if r.get("scenario") is not None))
    if len(names) > 1:
        raise ValueError(f"summarize: the results belong to different scenarios ({', '.join(names)})")
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "summary",
        "scenario": names[0] if names else None,
        "seeds": [r.get("seed") for r in seed_results],
        "n_seeds": len(seed_results),
        "std": STD_NOTE,
    }
    out["pretrain"] = _pretrain(seed_results)
    out["requests"] = _requests(seed_results)
    by_method: dict[str, list[Any]] = {}
    for res in seed_results:
        for m, entry in (res.get("methods") or {}).items():
            by_method.setdefault(m, []).append(entry)
    out["methods"] = {}
    for m, entries in by_method.items():
        merged = _merge(entries)
        if merged is not None:
            out["methods"][m] = merged
    refs = _merge([r["inversion_reference"] for r in seed_results if isinstance(r.get("inversion_reference"), dict)])
    if refs is not None:
        out["inversion_reference"] = refs  # the inversion's calibration rows (original and untrained model)
    walls = [r["wall_s"] for r in seed_results if _is_num(r.get("wall_s"))]
    if walls:
        out["wall_s"] = stats(walls)
    return out


def summary_csv_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, Any, Any, Any]]:
    """Rows of ``summary.csv``: ``(method, setting, metric, mean, std, n)``; the metric names are those of
    ``metrics.csv``; pretraining's final test accuracy is the row of method ``pretrain``.
    """
    rows: list[tuple[str, str, str, Any, Any, Any]] = []
    fta = dig(summary, "pretrain", "final_test_acc")
    if fta:
        rows.append(("pretrain", "", "final_test_acc", fta["mean"], fta["std"], fta["n"]))
    methods = summary.get("methods") or {}
    for m in method_order(methods):
        entry = methods[m] if isinstance(methods[m], dict) else {}
        setting = entry.get("setting", "")
        setting = setting if isinstance(setting, str) else "/".join(map(str, setting))
        for key, v in flatten_method(entry) + request_values(summary, m):
            if isinstance(v, dict):
                rows.append((m, setting, key, v["mean"], v["std"], v["n"]))
    return rows


def summary_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: the headline, per-request, recovery, depth and inversion tables as mean ± std over seeds (the
    inversion's ``informative`` as the number of seeds whose calibration row was informative).
    """
    n = summary.get("n_seeds", "?")
    seeds = ", ".join(str(s) for s in summary.get("seeds") or [])
    blocks: list[Any] = [
        Heading(f"fed-opc summary: {summary.get('scenario', '?')} over {n} seed(s)", 1),
        Para(f"Seeds: {seeds}. Values are mean ± std, std = {STD_NOTE}. Percent with one decimal."),
    ]
    fta = dig(summary, "pretrain", "final_test_acc")
    if fta:
        blocks.append(Para(f"Pretraining final test accuracy: {fmt(fta, 'pct')}% (n = {fta['n']})."))
    for heading, table in (
        ("Headline", headline_table(summary)),
        ("UA per request", per_request_table(summary)),
        ("Recovery attacks", recovery_table(summary)),
        ("Gradient inversion", inversion_table(summary)),
    ):
        if table is not None:
            blocks += [Heading(heading), table]
        if heading == "Recovery attacks":
            blocks += depth_section(summary)  # normalised recovery and verdicts, read on the means
    missing = _partial_values(summary)
    if missing:
        blocks += [
            Heading("Values missing in some seeds"),
            Table(["method", "metric", "n"], missing, [False, False, True]),
        ]
    if not summary.get("methods"):
        blocks.append(Para("No unlearning method in these runs."))
    return to_markdown(blocks)


def _partial_values(summary: dict[str, Any]) -> list[list[str]]:
    n_seeds = summary.get("n_seeds")
    methods = summary.get("methods") or {}
    rows = []
    for m in method_order(methods):
        entry = methods[m] if isinstance(methods[m], dict) else {}
        for key, v in flatten_method(entry):
            if isinstance(v, dict) and v.get("n") != n_seeds:
                rows.append([m, key, f"{v['n']} of {n_seeds}"])
    return rows


def write_summary(out_dir: str | Path, seed_results: list[dict]) -> list[Path]:
    """Write ``summary.json``, ``summary.md`` and ``summary.csv`` for ``seed_results`` into ``out_dir``.

    Parameters
    ----------
    out_dir : the multi-seed run directory (created if needed).
    seed_results : the ``results.json`` content of each seed.

    Returns
    -------
    The three paths written.

    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(seed_results)
    paths = [out / "summary.json", out / "summary.md", out / "summary.csv"]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(summary_markdown(summary), encoding="utf-8")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "setting", "metric", "mean", "std", "n"])
    w.writerows(summary_csv_rows(summary))
    paths[2].write_text(buf.getvalue(), encoding="utf-8")
    return paths


def load_seed_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The ``results.json`` of every ``seed_*/`` folder of a multi-seed directory, in seed order.

    Raises
    ------
    FileNotFoundError : no ``seed_*/results.json`` under ``run_dir``.
    ValueError : a results.json that is not valid JSON or not an object (the message names the file).

    """
    files = sorted(Path(run_dir).glob("seed_*/results.json"), key=_seed_key)
    if not files:
        raise FileNotFoundError(f"{run_dir}: no seed_*/results.json")
    out = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{f}: not a fed-opc results file (expected a JSON object)")
        out.append(data)
    return out


def _seed_key(p: Path) -> tuple[int, str]:
    tail = p.parent.name.removeprefix("seed_")
    return (int(tail), "") if tail.isdigit() else (sys.maxsize, tail)


def main(argv: Sequence[str] | None = None, prog: str = "python -m strategies.reporting.summary") -> int:
    """``fed-opc summary DIR``: (re)build DIR's summary from its ``seed_*/results.json``."""
    p = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    p.add_argument("run_dir", help="a multi-seed directory holding seed_*/results.json")
    args = p.parse_args(argv)
    try:
        seed_results = load_seed_results(args.run_dir)
        paths = write_summary(args.run_dir, seed_results)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in paths:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
