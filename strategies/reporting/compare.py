"""Compare methods and settings across run directories: ``scripts/compare.py RUN_DIR [RUN_DIR ...]``.

Each argument is a single run (a folder with ``results.json``), a multi-seed run (a folder with ``summary.json`` and
``seed_*/`` run folders; without ``summary.json`` the seeds are summarised on the fly) or a ``results.json`` /
``summary.json`` file. The table has one row per run x method, federated methods next to their centralized
counterpart (``fed_opc`` then ``opc``); a multi-seed value prints as ``mean ± std``. Metric names are those of
``metrics.csv``: ``UA``, ``cost.client_samples``, ``attack.recovery.fm.UA``, ``request.r0.UA``.

Bad input (a missing directory, a folder without results, a corrupt JSON file) prints one line naming the path to
stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strategies.reporting.document import Heading, Para, Table, to_markdown
from strategies.reporting.summary import summarize
from strategies.reporting.values import fmt, kind_of, lookup, method_order, unit_of

DEFAULT_METRICS = ("UA", "RA", "TA", "MIA", "avg_gap")


class CompareError(ValueError):
    """A run to compare cannot be read; the message names the path."""


@dataclass(frozen=True)
class Run:
    """One compared run: its label in the table, where it was read from, and its results or summary content."""

    label: str
    path: Path
    data: dict[str, Any]
    source: str  # results.json, summary.json, or seed_*/results.json (summarised here)

    @property
    def seeds(self) -> str:
        """The seed (single run) or the seeds and their count (multi-seed run), for the table."""
        if self.data.get("kind") == "summary":
            seeds = ",".join(str(s) for s in self.data.get("seeds") or [])
            return f"{seeds} (n={self.data.get('n_seeds', '?')})"
        return str(self.data.get("seed", "–"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CompareError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise CompareError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as e:
        raise CompareError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise CompareError(f"{path}: not a fed-opc results file (expected a JSON object)")
    if "methods" in data and not isinstance(data["methods"], dict):
        raise CompareError(f"{path}: not a fed-opc results file (methods is not an object)")
    return data


def load_run(path: str | Path) -> Run:
    """Read one run directory (or results / summary file) for comparison.

    Raises
    ------
    CompareError : the path is missing, holds no fed-opc results, or a JSON file in it is corrupt.

    """
    p = Path(path)
    if not p.exists():
        raise CompareError(f"{p}: no such directory")
    label = p.resolve().name if p.is_dir() else p.resolve().parent.name
    if p.is_file():
        return Run(label, p, _read_json(p), p.name)
    for name in ("results.json", "summary.json"):
        if (p / name).is_file():
            return Run(label, p, _read_json(p / name), name)
    # seed_2 before seed_10: shorter names first, so numeric seeds come in numeric order
    seed_files = sorted(p.glob("seed_*/results.json"), key=lambda f: (len(f.parent.name), f.parent.name))
    if seed_files:
        seed_results = [_read_json(f) for f in seed_files]
        try:
            data = summarize(seed_results)
        except ValueError as e:  # e.g. seed folders of different scenarios
            raise CompareError(f"{p}: {e}") from None
        return Run(label, p, data, "seed_*/results.json")
    raise CompareError(f"{p}: no results.json or summary.json (not a fed-opc run directory)")


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """:func:`load_run` for every path; two runs with the same folder name are labelled by their path instead."""
    runs = [load_run(p) for p in paths]
    labels = [r.label for r in runs]
    return [Run(str(r.path), r.path, r.data, r.source) if labels.count(r.label) > 1 else r for r in runs]


def comparison(
    runs: Sequence[Run], metrics: Sequence[str] = DEFAULT_METRICS, group_by: str = "run"
) -> tuple[list[str], list[list[str]], list[int]]:
    """The comparison table.

    Parameters
    ----------
    runs : the loaded runs.
    metrics : metric names as in ``metrics.csv``.
    group_by : ``run`` (each run's methods together) or ``method`` (each method's runs together).

    Returns
    -------
    ``(headers, rows, group_starts)``: the cells as printed (fractions in percent) and the row index where each group
    starts, so a renderer can separate groups.

    """
    if group_by not in ("run", "method"):
        raise ValueError(f"group_by must be 'run' or 'method', got {group_by!r}")
    headers = ["run", "seeds", "method", "setting"] + [f"{m}{unit_of(m)}" for m in metrics]
    cells: dict[tuple[int, str], list[str]] = {}
    for i, run in enumerate(runs):
        methods = run.data.get("methods") or {}
        if not methods:
            cells[(i, "")] = [run.label, run.seeds, "(no methods)", "–"] + ["–"] * len(metrics)
        for m in method_order(methods):
            setting = methods[m].get("setting", "–") if isinstance(methods[m], dict) else "–"
            setting = setting if isinstance(setting, str) else "/".join(map(str, setting))
            values = [fmt(lookup(run.data, m, metric), kind_of(metric)) for metric in metrics]
            cells[(i, m)] = [run.label, run.seeds, m, setting] + values
    if group_by == "run":
        keys = list(cells)
        group_of = [k[0] for k in keys]
    else:
        union: dict[str, Any] = {}
        for run in runs:
            union |= {m: e for m, e in (run.data.get("methods") or {}).items() if m not in union}
        order = method_order(union) + [""]
        keys = sorted(cells, key=lambda k: (order.index(k[1]), k[0]))
        group_of = [k[1] for k in keys]
    starts = [j for j in range(len(keys)) if j == 0 or group_of[j] != group_of[j - 1]]
    return headers, [cells[k] for k in keys], starts


def format_text(headers: Sequence[str], rows: Sequence[Sequence[str]], group_starts: Sequence[int] = ()) -> str:
    """A plain aligned table for the terminal; numbers right-aligned, a blank line between groups."""
    numeric = [j >= 4 for j in range(len(headers))]
    widths = [max([len(h)] + [len(r[j]) for r in rows]) for j, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    for j, r in enumerate(rows):
        if j in group_starts and j > 0:
            out.append("")
        out.append(line(r))
    return "\n".join(out) + "\n"


def format_markdown(runs: Sequence[Run], headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The comparison as Markdown: a list of the runs compared, then the table."""
    listing = "; ".join(f"`{r.label}` = {r.path} ({r.source})" for r in runs)
    numeric = [j >= 4 for j in range(len(headers))]
    return to_markdown(
        [
            Heading("fed-opc run comparison", 1),
            Para(f"Runs: {listing}. Fractions in percent; multi-seed values are mean ± std (sample std)."),
            Table(list(headers), [list(r) for r in rows], numeric),
        ]
    )


def parser(prog: str = "compare.py") -> argparse.ArgumentParser:
    """The arguments of ``compare``: the run directories, the metrics shown, a Markdown copy of the table and the row
    grouping.
    """
    p = argparse.ArgumentParser(
        prog=prog,
        description="Compare methods and settings across fed-opc run directories (single or multi-seed).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (results.json or summary.json)")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        metavar="METRIC",
        help="metric names as in metrics.csv, e.g. UA RA TA MIA avg_gap cost.client_samples attack.recovery.fm.UA "
        "(default: %(default)s)",
    )
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown to FILE ('-': stdout)")
    p.add_argument(
        "--group-by", choices=["run", "method"], default="run", help="rows grouped by run (default) or by method"
    )
    return p


def main(argv: Sequence[str] | None = None, prog: str = "compare.py") -> int:
    """Parse arguments, print the comparison, return the exit code (2 on bad input)."""
    args = parser(prog).parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    headers, rows, starts = comparison(runs, args.metrics, args.group_by)
    for j, metric in enumerate(args.metrics):
        if rows and all(r[4 + j] == "–" for r in rows):
            print(f"note: {metric} is absent from every run compared", file=sys.stderr)
    sys.stdout.write(format_text(headers, rows, starts))
    if args.markdown:
        md = format_markdown(runs, headers, rows)
        if args.markdown == "-":
            sys.stdout.write("\n" + md)
        else:
            try:
                Path(args.markdown).write_text(md, encoding="utf-8")
            except OSError as e:
                print(f"error: {args.markdown}: cannot write ({e.strerror or e})", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
