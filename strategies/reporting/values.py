"""The value layer of the reports: what a value is, how it prints, and where it sits in ``results.json``.

Values are plain numbers (``results.json``) or ``{"mean", "std", "n"}`` leaves (``summary.json``): every helper here
takes both, so a single run and a multi-seed summary print the same tables. Every lookup tolerates absent keys
(DESIGN.md section 6: a value that does not apply is absent). Also here: the order of methods in every table and plot,
the flattening of a method's block into ``metrics.csv`` names, and the ``metrics.csv`` writer.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Values stored as fractions in [0, 1]; tables show them in percent (avg_gap in percentage points).
FRACTION_KEYS = frozenset(
    {
        "UA",
        "RA",
        "TA",
        "MIA",
        "avg_gap",
        "TA_forgotten_classes",
        "TA_all",
        "MIA_conf_entropy",
        "acc_original",
        "nullspace_share",
        "dead_units_share",
        "cka_vs_original",
        "cka_vs_retrain",
        "UA_restricted",
        "floor_UA",
        "acc",
        "chance",
        "label_acc",
        "test_acc",
        "final_test_acc",
    }
)
# The retrain reference of each setting (avg_gap, the depth gaps and the dashed lines of the plots compare with it).
REFERENCE = {"federated": "fed_retrain", "centralized": "retrain"}
# The recovery attacks in their order, with the titles of their plot panels.
RECOVERY_ATTACKS = {
    "fm": "fm: feature mapping to the original features",
    "hr": "hr: head re-fit on frozen features",
    "probe": "probe: k-shot linear probe",
    "prototype": "prototype: k-shot class means",
    "relearn": "relearn: a few fine-tuning steps",
}
MB = 1e6  # decimal megabytes: bytes / 10^6


# ---------------------------------------------------------------------------------------------------------------------
# values: plain numbers (results.json) or {"mean", "std", "n"} (summary.json)


def is_stats(v: Any) -> bool:
    """True for a ``summary.json`` leaf ``{"mean", "std", "n"}``."""
    return isinstance(v, dict) and "mean" in v and "n" in v


def number(v: Any) -> float | None:
    """The number a value stands for (the mean of a summary leaf); None when absent or not a number."""
    if is_stats(v):
        v = v["mean"]
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def dig(d: Any, *keys: str) -> Any:
    """``d[k0][k1]...`` or None as soon as a level is absent (every consumer must tolerate missing keys)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt_one(x: float, kind: str) -> str:
    if math.isnan(x):
        return "nan"
    if kind == "pct":
        return f"{100 * x:.1f}"
    if kind == "s":
        return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"
    if kind == "int":
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"
    if kind == "mb":
        return f"{x / MB:.2f}"
    if kind == "db":
        return f"{x:.2f}"
    if kind == "ssim":
        return f"{x:.3f}"
    if kind == "num2":
        return f"{x:.2f}"
    if kind == "gap":  # a signed difference of normalised recoveries
        return f"{x:+.2f}"
    if kind == "pp":  # a signed difference in percentage points
        return f"{x:+.1f}"
    out = f"{x:#.3g}"  # three significant digits, trailing zeros kept so columns line up (8.00, 0.496)
    return out.rstrip(".") if "e" not in out else out


def fmt(v: Any, kind: str = "num") -> str:
    """Format a value for a table: ``kind`` is pct (fraction shown in percent, one decimal), s, int, mb, db, flag,
    num2 (two decimals), gap (signed, two decimals), pp (signed, one decimal) or num; a summary leaf prints as
    ``mean ± std``; an absent value as an en dash.
    """
    if kind == "flag":
        x = number(v)
        if x is None:
            return "–"
        if is_stats(v):  # collapsed is 0/1 per seed: the mean times n is the number of collapsed seeds
            return f"{round(x * v['n'])}/{v['n']}"
        return "yes" if x >= 0.5 else "no"
    x = number(v)
    if x is None:
        return "–"
    if is_stats(v):
        std = number(v.get("std"))
        # a derived value (a sum of means) has no stored spread: print the mean alone rather than a made-up std
        std_kind = {"gap": "num2", "pp": "s"}.get(kind, kind)  # a spread has no sign
        return f"{_fmt_one(x, kind)} ± {_fmt_one(std, std_kind)}" if std is not None else _fmt_one(x, kind)
    return _fmt_one(x, kind)


def kind_of(key: str) -> str:
    """The display kind of a (possibly dotted) metric name, from its last component."""
    last = key.rsplit(".", 1)[-1]
    last = re.sub(r"\[\d+\]$", "", last)
    if last in FRACTION_KEYS:
        return "pct"
    if last.endswith("_s"):
        return "s"
    if last.startswith("bytes") or last.endswith("_bytes"):
        return "mb"
    if last in {"rounds", "client_samples", "n_predicted_classes", "n_forget"}:
        return "int"
    if last in {"psnr", "baseline_psnr"}:
        return "db"
    if last in {"recovery", "recovery_steps"}:  # normalised recovery: 0 = floor, 1 = original
        return "num2"
    if last == "gap_to_retrain":
        return "gap"
    if last == "ssim":
        return "ssim"
    return "num"


def unit_of(key: str) -> str:
    """The unit shown next to a metric name in table headers."""
    if key.rsplit(".", 1)[-1] == "avg_gap":
        return " (pp)"
    return {"pct": " %", "s": " (s)", "mb": " (MB)", "db": " (dB)"}.get(kind_of(key), "")


# ---------------------------------------------------------------------------------------------------------------------
# the order of methods in every table and plot


def method_order(methods: dict[str, Any]) -> list[str]:
    """Federated methods in their order, each followed by its centralized counterpart (``fed_opc`` then ``opc``,
    ``fed_retrain`` then ``retrain``), then the remaining methods; pairs sit side by side in tables and plots.
    """
    names = list(methods)
    setting = {m: dig(methods, m, "setting") for m in names}
    out: list[str] = []
    for m in names:
        if setting[m] != "federated" or m in out:
            continue
        out.append(m)
        twin = m.removeprefix("fed_")
        if twin != m and setting.get(twin) == "centralized" and twin not in out:
            out.append(twin)
    out += [m for m in names if m not in out]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# derived values shared by the tables and the plots


def any_method_has(results: dict[str, Any], getter: Callable[[dict[str, Any]], Any]) -> bool:
    """True when ``getter`` finds a value in at least one method's block (a table column nobody has is left out)."""
    return any(getter(e) is not None for e in (results.get("methods") or {}).values() if isinstance(e, dict))


def bytes_sent(e: dict[str, Any]) -> Any:
    """Bytes sent up + down by a method (``e`` holds its ``cost``); a summary leaf of the sum of the means."""
    up, down = dig(e, "cost", "bytes_up"), dig(e, "cost", "bytes_down")
    if up is None and down is None:
        return None
    if is_stats(up) or is_stats(down):  # a summary: the sum of the means; the spread of up+down is not stored
        return {"mean": (number(up) or 0.0) + (number(down) or 0.0), "std": None, "n": seed_count(up, down)}
    return (number(up) or 0.0) + (number(down) or 0.0)


def seed_count(*vals: Any) -> int:
    """The largest ``n`` among summary leaves; 0 when none is one."""
    return max((v["n"] for v in vals if is_stats(v)), default=0)


def recovery_names(results: dict[str, Any]) -> list[str]:
    """The recovery attacks any method ran: the known ones in their order, then the others by name."""
    seen: list[str] = []
    for e in (results.get("methods") or {}).values():
        rec = dig(e, "attacks", "recovery")
        if isinstance(rec, dict):
            seen += [k for k, v in rec.items() if isinstance(v, dict) and not is_stats(v) and k not in seen]
    known = [a for a in (*RECOVERY_ATTACKS, "forget_probe") if a in seen]
    return known + sorted(a for a in seen if a not in known)


def pretrain_points(results: dict[str, Any]) -> list[tuple[float, float]]:
    """``(round, test accuracy)`` of every evaluated pretraining round."""
    pts = []
    for r in dig(results, "pretrain", "rounds") or []:
        rnd, acc = number(dig(r, "round")), number(dig(r, "test_acc"))
        if rnd is not None and acc is not None:
            pts.append((rnd, acc))
    return pts


# ---------------------------------------------------------------------------------------------------------------------
# metrics.csv: a method's values under their names, lookup by name, the file


def _leaves(node: Any, prefix: str) -> Iterable[tuple[str, Any]]:
    # Numbers and summary leaves are values; numeric lists become name[i]; lists of records (per-image inversion
    # results, per-round diagnostics) have no single value per method and stay in results.json.
    if is_stats(node) or (isinstance(node, (int, float)) and not isinstance(node, bool)):
        yield prefix, node
    elif isinstance(node, bool):
        yield prefix, int(node)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list) and node and all(is_stats(x) or isinstance(x, (int, float)) for x in node):
        for i, x in enumerate(node):
            yield f"{prefix}[{i}]", x


def flatten_method(entry: dict[str, Any]) -> list[tuple[str, Any]]:
    """The values of one ``methods[<name>]`` block as ``(metric, value)``: metrics under their own name, cost entries as
    ``cost.<key>``, attack values as ``attack.<path>`` (``attack.recovery.fm.UA``); numeric lists as ``name[i]``.
    """
    out: list[tuple[str, Any]] = []
    out += list(_leaves(entry.get("metrics") or {}, ""))
    out += list(_leaves(entry.get("cost") or {}, "cost"))
    out += list(_leaves(entry.get("attacks") or {}, "attack"))
    return out


def request_values(results: dict[str, Any], method: str) -> list[tuple[str, Any]]:
    """``(request.<id>.UA, value)`` for every request that measured ``method`` on its own forget set."""
    out = []
    for r in results.get("requests") or []:
        ua = dig(r, "metrics", method, "UA")
        if ua is not None and "id" in r:
            out.append((f"request.{r['id']}.UA", ua))
    return out


def lookup(results: dict[str, Any], method: str, metric: str) -> Any:
    """A method's value by the names of ``metrics.csv``: ``UA``, ``cost.client_samples``, ``attack.recovery.fm.UA``,
    ``request.r0.UA``, ``diagnostics.<path>``; None when absent.
    """
    entry = dig(results, "methods", method)
    if not isinstance(entry, dict):
        return None
    head, _, rest = metric.partition(".")
    if head == "request" and rest:
        rid, _, key = rest.rpartition(".")
        for r in results.get("requests") or []:
            if str(r.get("id")) == rid:
                return dig(r, "metrics", method, key)
        return None
    index = None
    m = re.fullmatch(r"(.*)\[(\d+)\]", metric)
    if m:
        metric, index = m.group(1), int(m.group(2))
        head, _, rest = metric.partition(".")
    roots = {
        "cost": "cost",
        "attack": "attacks",
        "attacks": "attacks",
        "diagnostics": "diagnostics",
        "metrics": "metrics",
    }
    v = dig(entry, roots[head], *rest.split(".")) if head in roots and rest else dig(entry, "metrics", metric)
    if index is not None:
        return v[index] if isinstance(v, list) and index < len(v) else None
    return v


def metrics_rows(results: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """The rows of ``metrics.csv``: ``(method, setting, metric, value)``, one per method x value."""
    methods = results.get("methods") or {}
    rows = []
    for m in method_order(methods):
        entry = methods[m] if isinstance(methods[m], dict) else {}
        setting = str(entry.get("setting", ""))
        for key, v in flatten_method(entry) + request_values(results, m):
            rows.append((m, setting, key, v))
    return rows


def write_metrics_csv(path: Path, results: dict[str, Any]) -> Path:
    """``metrics.csv``: columns method, setting, metric, value; numbers as Python writes them (no rounding)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "setting", "metric", "value"])
    w.writerows(metrics_rows(results))
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path
