"""The human-readable side of a run directory: ``metrics.csv``, ``plots/*.png``, ``report.md`` and ``report.html``.

``write_report(run_dir, results)`` reads nothing but the ``results.json`` content it is given (and ``scenario.yaml``
when no scenario is passed), so it can rebuild the report of any finished run::

    python -m strategies.report runs/cifar10_100clients

Every part tolerates absent values (DESIGN.md section 6: a value that does not apply is absent): a run without attacks
has no attack plot or table, a run without requests has no request table, a run without methods has only its
pretraining. The table helpers here also read ``summary.json`` content (``strategies.summary``), whose leaves are
``{"mean", "std", "n"}`` instead of numbers, so a single run and a multi-seed summary print the same tables.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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
# One colour per setting in every plot (colour-blind safe pair), centralized also hatched so print in grey still works.
SETTING_STYLE: dict[str, dict[str, str]] = {
    "federated": {"color": "#1f6fb4", "light": "#9cc3e6", "hatch": "", "marker": "o"},
    "centralized": {"color": "#e66101", "light": "#fdb863", "hatch": "///", "marker": "s"},
}
_OTHER_STYLE = {"color": "#777777", "light": "#cccccc", "hatch": "..", "marker": "^"}
REFERENCE = {"federated": "fed_retrain", "centralized": "retrain"}
RECOVERY_ATTACKS = {
    "fm": "fm: feature mapping to the original features",
    "hr": "hr: head re-fit on frozen features",
    "probe": "probe: k-shot linear probe",
    "prototype": "prototype: k-shot class means",
    "relearn": "relearn: a few fine-tuning steps",
}
PLOT_FILES = (
    "pretrain_accuracy.png",
    "metrics.png",
    "recovery_attacks.png",
    "depth.png",
    "feature_norms.png",
    "cost_vs_gap.png",
)
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
# method order and flattening


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


# ---------------------------------------------------------------------------------------------------------------------
# a tiny document model, rendered to both Markdown and HTML so the two reports hold the same content


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    row_classes: list[str] = field(default_factory=list)  # the setting of each row, for the HTML colour marker


@dataclass
class Image:
    rel_path: str  # relative to the run directory, e.g. plots/metrics.png
    caption: str
    data: bytes = b""


Block = Heading | Para | Bullets | Table | Image


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Render blocks as GitHub-flavoured Markdown."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {it}" for it in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |"]
            lines.append("| " + " | ".join("---:" if n else "---" for n in b.numeric) + " |")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.rel_path})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    # Markdown's `code` spans and **bold** are the only inline markup the report uses
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#1d1d1d;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.88em}
th,td{border-bottom:1px solid #e3e3e3;padding:.25em .65em;vertical-align:top}
th{background:#f4f4f4;text-align:left;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr:hover td{background:#fafafa}
tr.federated td:first-child{border-left:5px solid #1f6fb4}
tr.centralized td:first-child{border-left:5px solid #e66101}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    """Render blocks as one self-contained HTML page: inline CSS, images as base64 data URIs, no external resource."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_html(it)}</li>" for it in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(
                f'<th class="num">{html.escape(h)}</th>' if n else f"<th>{html.escape(h)}</th>"
                for h, n in zip(b.headers, b.numeric)
            )
            body = []
            for i, row in enumerate(b.rows):
                cls = b.row_classes[i] if i < len(b.row_classes) and b.row_classes[i] else ""
                cells = "".join(
                    f'<td class="num">{html.escape(c)}</td>' if n else f"<td>{_inline_html(c)}</td>"
                    for c, n in zip(row, b.numeric)
                )
                body.append(f'<tr class="{html.escape(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        elif isinstance(b, Image):
            uri = "data:image/png;base64," + base64.b64encode(b.data).decode("ascii")
            cap = html.escape(b.caption)
            parts.append(f'<figure><img src="{uri}" alt="{cap}"><figcaption>{cap}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# tables shared by report.md, report.html and summary.md


def _style(setting: Any) -> dict[str, str]:
    return SETTING_STYLE.get(str(setting), _OTHER_STYLE)


def _any(results: dict[str, Any], getter: Callable[[dict[str, Any]], Any]) -> bool:
    return any(getter(e) is not None for e in (results.get("methods") or {}).values() if isinstance(e, dict))


def headline_table(results: dict[str, Any]) -> Table | None:
    """Method, setting, UA, RA, TA, MIA, avg_gap (percent), RTE, rounds, client samples, MB sent and the collapse flag."""
    methods = results.get("methods") or {}
    if not methods:
        return None
    cols: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
        ("UA %", lambda e: dig(e, "metrics", "UA"), "pct"),
        ("RA %", lambda e: dig(e, "metrics", "RA"), "pct"),
        ("TA %", lambda e: dig(e, "metrics", "TA"), "pct"),
        ("TA all classes %", _ta_all_if_different, "pct"),
        ("TA forgotten classes %", lambda e: dig(e, "metrics", "TA_forgotten_classes"), "pct"),
        ("MIA %", lambda e: dig(e, "metrics", "MIA"), "pct"),
        ("avg_gap (pp)", lambda e: dig(e, "metrics", "avg_gap"), "pct"),
        ("RTE (s)", lambda e: dig(e, "metrics", "RTE_s"), "s"),
        ("rounds", lambda e: dig(e, "cost", "rounds"), "int"),
        ("client samples", lambda e: dig(e, "cost", "client_samples"), "int"),
        ("MB sent (up+down)", _bytes_sent, "mb"),
        ("collapsed", lambda e: dig(e, "metrics", "collapsed"), "flag"),
    ]
    # a column nobody has (TA_forgotten_classes outside class scope, MIA when not computed) is left out
    cols = [c for c in cols if _any(results, c[1])]
    rows, classes = [], []
    for m in method_order(methods):
        e = methods[m] if isinstance(methods[m], dict) else {}
        rows.append([m, str(e.get("setting", "–"))] + [fmt(get(e), kind) for _, get, kind in cols])
        classes.append(str(e.get("setting", "")))
    return Table(["method", "setting"] + [c[0] for c in cols], rows, [False, False] + [True] * len(cols), classes)


def _ta_all_if_different(e: dict[str, Any]) -> Any:
    # TA is on the retained classes in class scope (SalUn); the whole test set's accuracy is shown only where it differs
    ta, ta_all = dig(e, "metrics", "TA"), dig(e, "metrics", "TA_all")
    return ta_all if number(ta_all) is not None and number(ta_all) != number(ta) else None


def _bytes_sent(e: dict[str, Any]) -> Any:
    up, down = dig(e, "cost", "bytes_up"), dig(e, "cost", "bytes_down")
    if up is None and down is None:
        return None
    if is_stats(up) or is_stats(down):  # a summary: the sum of the means; the spread of up+down is not stored
        return {"mean": (number(up) or 0.0) + (number(down) or 0.0), "std": None, "n": _n(up, down)}
    return (number(up) or 0.0) + (number(down) or 0.0)


def _n(*vals: Any) -> int:
    return max((v["n"] for v in vals if is_stats(v)), default=0)


def diagnostics_table(results: dict[str, Any]) -> Table | None:
    """Representation diagnostics: feature norms and their ratio, forget entropy, CKA, null-space share, dead units."""
    methods = results.get("methods") or {}
    cols: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
        ("forget norm", lambda e: dig(e, "metrics", "forget_feature_norm"), "num"),
        ("retain norm", lambda e: dig(e, "metrics", "retain_feature_norm"), "num"),
        ("forget / retain", _norm_ratio, "num"),
        ("forget entropy (nats)", lambda e: dig(e, "metrics", "forget_entropy"), "num"),
        ("CKA vs original %", lambda e: dig(e, "metrics", "cka_vs_original"), "pct"),
        ("CKA vs retrain %", lambda e: dig(e, "metrics", "cka_vs_retrain"), "pct"),
        ("null-space share %", lambda e: dig(e, "metrics", "nullspace_share"), "pct"),
        ("dead units %", lambda e: dig(e, "metrics", "dead_units_share"), "pct"),
        ("predicted classes", lambda e: dig(e, "metrics", "n_predicted_classes"), "int"),
    ]
    cols = [c for c in cols if _any(results, c[1])]
    if not methods or not cols:
        return None
    rows, classes = [], []
    for m in method_order(methods):
        e = methods[m] if isinstance(methods[m], dict) else {}
        rows.append([m, str(e.get("setting", "–"))] + [fmt(get(e), kind) for _, get, kind in cols])
        classes.append(str(e.get("setting", "")))
    return Table(["method", "setting"] + [c[0] for c in cols], rows, [False, False] + [True] * len(cols), classes)


def _norm_ratio(e: dict[str, Any]) -> float | None:
    f, r = number(dig(e, "metrics", "forget_feature_norm")), number(dig(e, "metrics", "retain_feature_norm"))
    return f / r if f is not None and r else None


def requests_table(results: dict[str, Any]) -> Table | None:
    """One row per deletion request: id, client, scope, round, forget samples, classes, clients, status."""
    reqs = [r for r in results.get("requests") or [] if isinstance(r, dict)]
    if not reqs:
        return None
    rows = []
    for r in reqs:
        rows.append(
            [
                str(r.get("id", "–")),
                str(r.get("client", "–")),
                str(r.get("scope", "–")),
                fmt(r.get("round"), "int"),
                fmt(r.get("n_forget"), "int"),
                _short_list(r.get("classes")),
                _short_list(r.get("clients")),
                _status(r.get("status")),
            ]
        )
    return Table(
        ["request", "client", "scope", "round", "forget samples", "classes", "clients", "status"],
        rows,
        [False, False, False, True, True, False, False, False],
    )


def _status(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v if v is not None else "–")


def _short_list(v: Any, limit: int = 8) -> str:
    if not isinstance(v, list) or not v:
        return "–"
    shown = ", ".join(str(x) for x in v[:limit])
    return shown + (f", … (+{len(v) - limit})" if len(v) > limit else "")


def per_request_table(results: dict[str, Any]) -> Table | None:
    """UA of every method on each request's own forget set (method x request), in percent."""
    reqs = [r for r in results.get("requests") or [] if isinstance(r, dict) and r.get("metrics")]
    methods = results.get("methods") or {}
    if not reqs:
        return None
    names = method_order(methods) + [m for r in reqs for m in r["metrics"] if m not in methods]
    names = list(dict.fromkeys(names))
    headers = ["method", "setting"] + [f"{r.get('id', '?')} UA % ({r.get('scope', '?')})" for r in reqs]
    rows, classes = [], []
    for m in names:
        setting = str(dig(methods, m, "setting") or "–")
        rows.append([m, setting] + [fmt(dig(r, "metrics", m, "UA"), "pct") for r in reqs])
        classes.append(setting)
    return Table(headers, rows, [False, False] + [True] * len(reqs), classes)


def _recovery_names(results: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for e in (results.get("methods") or {}).values():
        rec = dig(e, "attacks", "recovery")
        if isinstance(rec, dict):
            seen += [k for k, v in rec.items() if isinstance(v, dict) and not is_stats(v) and k not in seen]
    known = [a for a in (*RECOVERY_ATTACKS, "forget_probe") if a in seen]
    return known + sorted(a for a in seen if a not in known)


def recovery_table(results: dict[str, Any]) -> Table | None:
    """UA after each recovery attack (percent) next to the model's own UA and the constant-predictor floor."""
    methods = results.get("methods") or {}
    names = _recovery_names(results)
    if not names:
        return None
    cols: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
        ("model UA %", lambda e: dig(e, "metrics", "UA"), "pct"),
        ("floor UA %", lambda e: dig(e, "attacks", "recovery", "floor_UA"), "pct"),
        ("original model UA %", _original_ua, "pct"),
    ]
    cols = [c for c in cols if _any(results, c[1])]
    for a in names:
        if a == "forget_probe":
            cols.append(("forget_probe acc %", lambda e: dig(e, "attacks", "recovery", "forget_probe", "acc"), "pct"))
            cols.append(
                ("forget_probe chance %", lambda e: dig(e, "attacks", "recovery", "forget_probe", "chance"), "pct")
            )
            continue
        cols.append((f"{a} UA %", lambda e, a=a: dig(e, "attacks", "recovery", a, "UA"), "pct"))
        restricted = (f"{a} UA restricted %", lambda e, a=a: dig(e, "attacks", "recovery", a, "UA_restricted"), "pct")
        if _any(results, restricted[1]):
            cols.append(restricted)
    rows, classes = [], []
    for m in method_order(methods):
        e = methods[m] if isinstance(methods[m], dict) else {}
        if not isinstance(dig(e, "attacks", "recovery"), dict):
            continue
        rows.append([m, str(e.get("setting", "–"))] + [fmt(get(e), kind) for _, get, kind in cols])
        classes.append(str(e.get("setting", "")))
    return Table(["method", "setting"] + [c[0] for c in cols], rows, [False, False] + [True] * len(cols), classes)


def _original_ua(e: dict[str, Any]) -> Any:
    acc = dig(e, "attacks", "recovery", "acc_original")
    if is_stats(acc):
        return {"mean": 1.0 - acc["mean"], "std": acc.get("std"), "n": acc["n"]}
    return 1.0 - acc if number(acc) is not None else None


def inversion_table(results: dict[str, Any]) -> Table | None:
    """Gradient-inversion quality per method and target: PSNR against the flat mean-colour baseline, and SSIM."""
    methods = results.get("methods") or {}
    rows, classes = [], []
    with_labels = False
    # the calibration rows first: the same attack on the original (pretrained) and the untrained model
    refs = results.get("inversion_reference") or {}
    entries = [
        (label, "–", {"global_model": refs[key]})
        for key, label in (("original_global_model", "original (calibration)"), ("untrained_global_model", "untrained"))
        if isinstance(refs.get(key), dict)
    ]
    entries += [
        (m, str(dig(methods[m], "setting") or "–"), dig(methods[m], "attacks", "inversion"))
        for m in method_order(methods)
    ]
    with_flag = any(
        isinstance(v, dict) and "informative" in v
        for _, _, inv in entries
        if isinstance(inv, dict)
        for v in inv.values()
    )
    for m, setting, inv in entries:
        if not isinstance(inv, dict):
            continue
        for target, v in inv.items():
            if not isinstance(v, dict) or is_stats(v):
                continue
            p, b = number(v.get("psnr")), number(v.get("baseline_psnr"))
            gain: Any = p - b if p is not None and b is not None else None
            if is_stats(v.get("psnr")):
                gain = {"mean": gain, "std": None, "n": _n(v.get("psnr"))} if gain is not None else None
            with_labels |= v.get("label_acc") is not None
            flag = {True: "yes", False: "no"}.get(v.get("informative"), "–")
            rows.append(
                [
                    m,
                    setting,
                    target,
                    fmt(v.get("psnr"), "db"),
                    fmt(v.get("baseline_psnr"), "db"),
                    fmt(gain, "db"),
                    fmt(v.get("ssim"), "ssim"),
                    *([flag] if with_flag else []),
                    fmt(v.get("label_acc"), "pct"),
                ]
            )
            classes.append(setting if setting != "–" else "")
    if not rows:
        return None
    headers = ["method", "setting", "target", "PSNR (dB)", "flat baseline PSNR (dB)", "PSNR − baseline (dB)", "SSIM"]
    headers += ["informative"] if with_flag else []
    if with_labels:
        headers.append("label acc %")
    else:
        rows = [r[:-1] for r in rows]
    return Table(headers, rows, [False, False, False] + [True] * (len(headers) - 3), classes)


# ---------------------------------------------------------------------------------------------------------------------
# plots (matplotlib's object API with the Agg canvas: no pyplot state, safe in a worker process)


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, metadata={"Software": None})


def _setting_legend(fig, settings: Iterable[str]) -> None:
    from matplotlib.patches import Patch

    handles = []
    for s in dict.fromkeys(settings):
        st = _style(s)
        handles.append(Patch(facecolor=st["color"], hatch=st["hatch"], edgecolor="white", label=s))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=9.5)


def _pretrain_points(results: dict[str, Any]) -> list[tuple[float, float]]:
    pts = []
    for r in dig(results, "pretrain", "rounds") or []:
        rnd, acc = number(dig(r, "round")), number(dig(r, "test_acc"))
        if rnd is not None and acc is not None:
            pts.append((rnd, acc))
    return pts


def plot_pretraining(results: dict[str, Any], path: Path) -> bool:
    """Global test accuracy per pretraining round, with a dashed line at each deletion request's round."""
    pts = _pretrain_points(results)
    if not pts:
        return False
    fig = _figure(8, 4.2)
    ax = fig.add_subplot()
    x, y = [p[0] for p in pts], [100 * p[1] for p in pts]
    ax.plot(x, y, marker="o", ms=4, color=SETTING_STYLE["federated"]["color"], lw=1.8)
    ax.annotate(
        f"final {y[-1]:.1f}%", (x[-1], y[-1]), xytext=(-8, 6), textcoords="offset points", ha="right", fontsize=9
    )
    by_round: dict[float, list[str]] = {}
    for r in results.get("requests") or []:
        rnd = number(r.get("round")) if isinstance(r, dict) else None
        if rnd is not None:
            by_round.setdefault(rnd, []).append(f"{r.get('id', '?')} ({r.get('scope', '?')})")
    for rnd, ids in sorted(by_round.items()):
        ax.axvline(rnd, color="#b2182b", ls="--", lw=1.2)
        # many requests in one round: name the first few and count the rest, so the label fits the axes
        label = ", ".join(ids[:3]) + (f" +{len(ids) - 3} more" if len(ids) > 3 else "")
        ax.annotate(
            label, (rnd, 0.03), xycoords=ax.get_xaxis_transform(), xytext=(-4, 0),
            textcoords="offset points", rotation=90, va="bottom", ha="right", fontsize=8.5, color="#b2182b",
        )  # fmt: skip
    lo = min(x + list(by_round))
    hi = max(x + list(by_round))
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("FL round")
    ax.set_ylabel("global model test accuracy (%)")
    ax.set_title("FedAvg pretraining: test accuracy per round (dashed red: deletion requests)")
    ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)
    return True


_METRIC_TITLES = {
    "UA": "UA = 1 − forget accuracy (higher: more forgotten)",
    "RA": "RA: retain accuracy",
    "TA": "TA: test accuracy",
    "MIA": "MIA efficacy: forget samples judged non-members",
}


def _barh(ax, i: float, v: float, setting: str, height: float = 0.7, light: bool = False) -> None:
    st = _style(setting)
    ax.barh(i, v, height=height, color=st["light" if light else "color"], hatch=st["hatch"], edgecolor="white", lw=0)


def plot_metrics(results: dict[str, Any], path: Path) -> bool:
    """UA / RA / TA / MIA per method, one panel per metric, bars coloured by setting, retrain references dashed."""
    methods = results.get("methods") or {}
    order = method_order(methods)
    keys = [k for k in _METRIC_TITLES if _any(results, lambda e, k=k: number(dig(e, "metrics", k)))]
    if not order or not keys:
        return False
    ncols = 2 if len(keys) > 1 else 1
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(5.6 * ncols, 0.8 + nrows * (0.3 * len(order) + 1.1))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    settings = [str(dig(methods, m, "setting")) for m in order]
    for ax, key in zip(axes.flat, keys):
        for i, m in enumerate(order):
            v = number(dig(methods, m, "metrics", key))
            if v is None:
                ax.text(1, i, "n/a", va="center", fontsize=8, color="#777777")
                continue
            _barh(ax, i, 100 * v, settings[i])
            ax.text(100 * v + 1, i, f"{100 * v:.1f}", va="center", fontsize=8)
        for s, ref in REFERENCE.items():
            v = number(dig(methods, ref, "metrics", key))
            if v is not None and dig(methods, ref, "setting") == s:
                ax.axvline(100 * v, color=_style(s)["color"], ls="--", lw=1)
        ax.set_title(_METRIC_TITLES[key], fontsize=10)
        ax.set_xlim(-1.5, 114)
        ax.set_xlabel(f"{key} (%)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(order)), labels=order)
    axes[0, 0].invert_yaxis()  # shared y: inverting once puts the first method at the top of every panel
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle("Unlearning metrics per method (dashed: fed_retrain / retrain reference of the same colour)")
    _setting_legend(fig, settings)
    _save(fig, path)
    return True


def plot_recovery(results: dict[str, Any], path: Path) -> bool:
    """UA after each recovery attack, one panel per attack; the constant-predictor floor and the model's UA marked."""
    methods = results.get("methods") or {}
    order = [m for m in method_order(methods) if isinstance(dig(methods, m, "attacks", "recovery"), dict)]
    names = [a for a in _recovery_names(results) if a != "forget_probe"]
    names = [
        a for a in names if any(number(dig(methods, m, "attacks", "recovery", a, "UA")) is not None for m in order)
    ]
    probe = any(number(dig(methods, m, "attacks", "recovery", "forget_probe", "acc")) is not None for m in order)
    panels = names + (["forget_probe"] if probe else [])
    if not order or not panels:
        return False
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(4.4 * ncols, 0.9 + nrows * (0.3 * len(order) + 1.2))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    settings = [str(dig(methods, m, "setting")) for m in order]
    for ax, a in zip(axes.flat, panels):
        for i, m in enumerate(order):
            rec = dig(methods, m, "attacks", "recovery")
            if a == "forget_probe":
                v, line = number(dig(rec, a, "acc")), number(dig(rec, a, "chance"))
            else:
                v, line = number(dig(rec, a, "UA")), number(dig(rec, "floor_UA"))
            if v is None:
                ax.text(1, i, "n/a", va="center", fontsize=8, color="#777777")
            else:
                _barh(ax, i, 100 * v, settings[i])
                ax.text(100 * v + 1, i, f"{100 * v:.1f}", va="center", fontsize=8)
            if line is not None:
                ax.plot([100 * line] * 2, [i - 0.45, i + 0.45], color="black", ls="--", lw=1.3)
            own = number(dig(methods, m, "metrics", "UA"))
            if a != "forget_probe" and own is not None:
                ax.plot(100 * own, i, marker="D", color="black", ms=4, ls="none")
        title = RECOVERY_ATTACKS.get(a, a)
        if a == "forget_probe":
            title = "forget_probe: accuracy among forgotten classes"
        ax.set_title(title, fontsize=9.5)
        ax.set_xlim(-1.5, 114)
        ax.set_xlabel(
            "accuracy among forgotten classes (%); dashed: chance" if a == "forget_probe" else "UA after attack (%)"
        )
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(order)), labels=order)
    axes[0, 0].invert_yaxis()
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Recovery attacks: bars = UA after the attack, ◆ = UA of the model itself, dashed = constant-predictor floor\n"
        "(bar far below ◆: the attack recovers forgotten predictions; bar at the floor: nothing recoverable)",
        fontsize=10,
    )
    _setting_legend(fig, settings)
    _save(fig, path)
    return True


def plot_feature_norms(results: dict[str, Any], path: Path) -> bool:
    """Mean penultimate feature norm of the forget set next to the retain set's, per method (log axis)."""
    methods = results.get("methods") or {}
    order = [
        m
        for m in method_order(methods)
        if number(dig(methods, m, "metrics", "forget_feature_norm")) is not None
        or number(dig(methods, m, "metrics", "retain_feature_norm")) is not None
    ]
    if not order:
        return False
    vals = [
        v
        for m in order
        for k in ("forget_feature_norm", "retain_feature_norm")
        if (v := number(dig(methods, m, "metrics", k))) is not None and v > 0
    ]
    lo = min(vals) / 3 if vals else 1e-3
    hi = max(vals) * 8 if vals else 1.0
    fig = _figure(8.5, 1.3 + 0.62 * len(order))
    ax = fig.add_subplot()
    settings = [str(dig(methods, m, "setting")) for m in order]
    for i, m in enumerate(order):
        f = number(dig(methods, m, "metrics", "forget_feature_norm"))
        r = number(dig(methods, m, "metrics", "retain_feature_norm"))
        for off, v, name, light in ((-0.19, f, "forget", False), (0.19, r, "retain", True)):
            if v is None:
                continue
            if v > 0:
                _barh(ax, i + off, v, settings[i], height=0.36, light=light)
            ax.text(max(v, lo) * 1.08, i + off, f"{name} {v:.3g}", va="center", fontsize=7.5)
        if f is not None and r:
            ax.text(hi * 0.93, i, f"ratio {f / r:.2f}", va="center", ha="right", fontsize=8.5, weight="bold")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_yticks(range(len(order)), labels=order)
    ax.set_ylim(len(order) - 0.45, -0.55)  # first method on top, room for both bars of the first and last rows
    ax.set_xlabel("mean L2 norm of penultimate features (log scale)")
    ax.set_title(
        "Feature norms: forget set (dark, upper bar) vs retain set (light, lower bar)\n"
        "ratio = forget / retain; a contraction of the forget features shows as a ratio well below 1",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3, which="both")
    _setting_legend(fig, settings)
    _save(fig, path)
    return True


def plot_cost(results: dict[str, Any], path: Path) -> bool:
    """Cost vs forgetting quality: client samples and bytes sent (log x) against avg_gap, one labelled point per method."""
    methods = results.get("methods") or {}
    order = [m for m in method_order(methods) if number(dig(methods, m, "metrics", "avg_gap")) is not None]
    panels = [
        ("client samples processed by unlearning (log scale)", lambda e: number(dig(e, "cost", "client_samples")), 1.0),
        ("bytes sent, down + up (MB, log scale)", lambda e: number(_bytes_sent(e)), MB),
    ]
    if not order or not any(get(methods[m]) is not None for m in order for _, get, _ in panels):
        return False
    fig = _figure(12, 5)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (label, get, scale) in zip(axes, panels):
        groups: dict[tuple[float, float], list[str]] = {}
        hidden = []
        for m in order:
            x, gap = get(methods[m]), number(dig(methods, m, "metrics", "avg_gap"))
            if x is None or x <= 0:
                hidden.append(m)
                continue
            groups.setdefault((x / scale, 100 * gap), []).append(m)  # coincident points share one label
        for (x, y), ms in groups.items():
            st = _style(dig(methods, ms[0], "setting"))
            ax.scatter([x], [y], s=55, color=st["color"], marker=st["marker"], edgecolor="black", lw=0.5, zorder=3)
            ax.annotate(", ".join(ms), (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8.5)
        if groups:
            ax.set_xscale("log")
            xs = [k[0] for k in groups]
            ax.set_xlim(min(xs) / 2, max(xs) * 4)
        else:  # e.g. only centralized methods: they send nothing, and an empty axis would look like a bug
            ax.text(0.5, 0.5, "no method with a value > 0", transform=ax.transAxes, ha="center", color="#555555")
            ax.set_xticks([])
        ax.margins(y=0.12)
        ax.set_xlabel(label + (f"\nnot shown (0 or absent): {', '.join(hidden)}" if hidden else ""))
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("avg_gap to retrain (percentage points)")
    axes[0].set_title("Computation: client samples vs avg_gap", fontsize=10)
    axes[1].set_title("Communication: bytes vs avg_gap", fontsize=10)
    fig.suptitle("Cost vs forgetting quality (lower left is best; circles federated, squares centralized)")
    _setting_legend(fig, [str(dig(methods, m, "setting")) for m in order])
    _save(fig, path)
    return True


PLOTS: dict[str, tuple[Callable[[dict[str, Any], Path], bool], str]] = {
    "pretrain_accuracy.png": (
        plot_pretraining,
        "Global test accuracy during FL pretraining, with the deletion requests",
    ),
    "metrics.png": (plot_metrics, "UA, RA, TA and MIA per method (blue: federated, orange hatched: centralized)"),
    "recovery_attacks.png": (plot_recovery, "UA after each recovery attack, with the constant-predictor floor"),
    "depth.png": (
        lambda results, path: _depth().plot_depth(results, path),
        "Normalised recovery per attack: 0 = constant-predictor floor, 1 = original model, dashed = retrain reference",
    ),
    "feature_norms.png": (plot_feature_norms, "Forget vs retain penultimate feature norms per method"),
    "cost_vs_gap.png": (plot_cost, "Cost (client samples, bytes) vs avg_gap per method"),
    "latency.png": (
        lambda results, path: _edge().plot_latency(results, path),
        "How long each request waited for each federated method, in rounds and simulated hours (docs/edge.md)",
    ),
    "sim_clock.png": (
        lambda results, path: _edge().plot_sim_clock(results, path),
        "Global test accuracy during pretraining against the simulated clock of the edge federation",
    ),
}


def _edge():
    # strategies.edge_report builds on this module's tables and plot helpers, so it is imported when first needed
    from strategies import edge_report

    return edge_report


def _depth():
    # strategies.depth builds on this module's tables and plot helpers, so it is imported when first needed
    from strategies import depth

    return depth


def write_plots(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Draw every plot the results support into ``run_dir/plots``; remove stale ones of a previous report."""
    out = run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (draw, _) in PLOTS.items():
        p = out / name
        if draw(results, p):
            written.append(p)
        else:
            p.unlink(missing_ok=True)  # e.g. an attack plot left from an earlier report of this directory
    return written


# ---------------------------------------------------------------------------------------------------------------------
# the report


def _load_scenario(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    p = run_dir / "scenario.yaml"
    if not p.is_file():
        return None, None
    import yaml

    try:
        sc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        return None, f"{p.name} could not be read: {str(e).splitlines()[0]}"
    return (sc if isinstance(sc, dict) else None), None


def _partition(p: Any) -> str:
    if not isinstance(p, dict):
        return str(p) if p is not None else "–"
    rest = ", ".join(f"{k}={v}" for k, v in p.items() if k != "kind" and v is not None)
    return f"{p.get('kind', '?')}" + (f" ({rest})" if rest else "")


def scenario_items(results: dict[str, Any], scenario: dict[str, Any] | None) -> list[str]:
    """The scenario summary lines: dataset, clients, partition, model, rounds, seed, methods, attacks."""
    sc = scenario or {}
    items = [
        f"scenario: `{results.get('scenario', sc.get('name', '?'))}`, seed {results.get('seed', sc.get('seed', '?'))}"
    ]
    data = sc.get("data") if isinstance(sc.get("data"), dict) else {}
    if data:
        limit = f", at most {data['max_samples']:,} training samples" if data.get("max_samples") else ""
        items.append(f"dataset: {data.get('dataset', '?')}{limit}")
        items.append(f"clients: {data.get('num_clients', '?')}, partition: {_partition(data.get('partition'))}")
    model = sc.get("model") if isinstance(sc.get("model"), dict) else {}
    if model:
        extra = ", ".join(f"{k}={v}" for k, v in model.items() if k != "arch" and v is not None)
        items.append(f"model: {model.get('arch', '?')}" + (f" ({extra})" if extra else ""))
    fed = sc.get("federation") if isinstance(sc.get("federation"), dict) else {}
    if fed:
        items.append(
            f"federation: {fed.get('rounds', '?')} rounds, {fed.get('clients_per_round', '?')} clients per round, "
            f"{fed.get('local_epochs', '?')} local epoch(s), batch {fed.get('batch_size', '?')}, lr {fed.get('lr', '?')}, "
            f"backend {fed.get('backend', '?')}"
        )
    methods = results.get("methods") or {}
    if methods:
        by: dict[str, list[str]] = {}
        for m in method_order(methods):
            by.setdefault(str(dig(methods, m, "setting") or "other"), []).append(m)
        items.append("methods: " + "; ".join(f"{s}: {', '.join(ms)}" for s, ms in by.items()))
    att = sc.get("attacks") if isinstance(sc.get("attacks"), dict) else {}
    rec, inv = att.get("recovery") or [], dig(att, "inversion", "targets") or []
    if rec or inv:
        items.append(f"attacks: recovery {', '.join(rec) or 'none'}; inversion {', '.join(inv) or 'none'}")
    if number(results.get("wall_s")) is not None:
        items.append(f"wall time: {fmt(results['wall_s'], 's')} s")
    return items


def pretrain_items(results: dict[str, Any]) -> list[str]:
    """Final test accuracy, rounds, cache use and cost of the pretraining."""
    pre = results.get("pretrain")
    if not isinstance(pre, dict):
        return []
    items = []
    pts = _pretrain_points(results)
    if pts:
        items.append(f"final test accuracy: {100 * pts[-1][1]:.1f}% (round {pts[-1][0]:.0f})")
    elif number(pre.get("final_test_acc")) is not None:
        items.append(f"final test accuracy: {fmt(pre['final_test_acc'], 'pct')}%")
    rounds = pre.get("rounds")
    if isinstance(rounds, list):
        items.append(f"rounds: {len(rounds)}")
    if "cached" in pre:
        cached = "yes, reused from the pretraining cache" if pre["cached"] else "no, trained in this run"
        key = f" (key `{pre['cache_key']}`)" if pre.get("cache_key") else ""
        items.append(f"cached: {cached}{key}")
    cost = pre.get("cost")
    if isinstance(cost, dict):
        items.append(
            f"cost: {fmt(cost.get('client_samples'), 'int')} client samples, "
            f"{fmt(_bytes_sent({'cost': cost}), 'mb')} MB sent (up + down), {fmt(cost.get('failures'), 'int')} failures"
        )
    return items


HOW_TO_READ = [
    "UA (unlearning accuracy) = 1 − accuracy on the forget set; RA = retain accuracy; TA = test accuracy; all in "
    "percent. In a class deletion TA is on the retained classes (as SalUn reports it; `TA all classes` is the whole "
    "test set). MIA = share of forget samples a membership-inference classifier judges to be non-members (SalUn's "
    "SVC on the true class's confidence, trained on retain samples against test samples of the retained classes).",
    "The reference is retraining without the forgotten data: `fed_retrain` for federated methods, `retrain` for "
    "centralized ones. avg_gap = mean |difference| to that reference over UA, RA, TA and MIA, in percentage points: "
    "lower is closer.",
    "On a whole-client deletion the forget data is in-distribution, so retraining keeps a high forget accuracy: a method "
    "with UA far above fed_retrain / retrain there over-forgets (it damages what any model trained without the client "
    "would still know). On a class deletion a high UA is the goal. The per-request table separates the two.",
    "Recovery attacks read the unlearned model with a little help (a map to the original features, a re-fitted head, "
    "a k-shot probe, a few fine-tuning steps). An attack whose UA sits at the floor (the UA of a constant predictor of "
    "the most frequent forget label) recovered nothing; an attack UA well below the model's own UA means the "
    "forgotten predictions were hidden, not removed.",
    "Forgetting depth: normalised recovery puts each attack's forget accuracy between the constant-predictor floor "
    "(0: deep) and the original model (1: shallow), so it compares across models and datasets; the verdicts read "
    "the strongest frozen read-out against the retrain reference (thresholds in docs/metrics.md).",
    "Inversion: a PSNR at or below the flat baseline (a mean-colour image) means the reconstruction shows nothing of "
    "the private images.",
    "collapsed = yes marks a degenerate model (it predicts very few classes or its features died); its UA means little.",
]


def report_blocks(
    run_dir: Path,
    results: dict[str, Any],
    scenario: dict[str, Any] | None,
    plots: Sequence[Path],
    note: str | None = None,
) -> list[Block]:
    """The report's content, in order, for :func:`to_markdown` and :func:`to_html`."""
    title = f"fed-opc run report: {results.get('scenario', run_dir.name)}"
    blocks: list[Block] = [Heading(title, 1)]
    warning = _depth().chance_warning(results, scenario)
    if warning:
        blocks.append(Para(warning))
    blocks += [Heading("Scenario"), Bullets(scenario_items(results, scenario))]
    if note:
        blocks.append(Para(note))
    pre = pretrain_items(results)
    if pre:
        blocks += [Heading("Pretraining"), Bullets(pre)]
    tables = [
        ("Deletion requests", requests_table(results), None),
        (
            "Request latency",
            _edge().latency_table(results),
            "Rounds (and simulated hours) from each request to the end of its serving, per federated method; an "
            "overdue request was not served within its deadline (docs/edge.md).",
        ),
        (
            "Edge devices",
            _edge().device_table(results),
            "Per federated method's world: rounds a requester was offline when needed, simulated time, stragglers "
            "dropped, and each device profile's busy hours and megabytes.",
        ),
        (
            "Headline",
            headline_table(results),
            "Metrics on the union of all forget sets. Percent with one decimal; avg_gap in percentage points; "
            "MB = 10^6 bytes.",
        ),
        ("UA per request", per_request_table(results), "UA of each method on each request's own forget set."),
        ("Representation diagnostics", diagnostics_table(results), None),
        ("Recovery attacks", recovery_table(results), "UA after each attack, in percent."),
        (
            "Inversion attacks",
            inversion_table(results),
            "Reconstruction of private images from what the server sees; PSNR − baseline > 0 means better than a "
            "flat image of each image's own mean colour. The first rows attack the original (pretrained) and the "
            "untrained model: where the attack does not beat the baseline by 2 dB on the original model, the "
            "comparison is uninformative (informative = no): it says nothing about unlearning, and a low PSNR after "
            "unlearning does not mean the method resisted it.",
        ),
    ]
    if not results.get("requests"):
        blocks.append(Para("No deletion request in this run."))
    if not results.get("methods"):
        blocks.append(Para("No unlearning method in this run."))
    for heading, table, text in tables:
        if table is None:
            continue
        blocks.append(Heading(heading))
        if text:
            blocks.append(Para(text))
        blocks.append(table)
        if heading == "Recovery attacks":
            blocks += _depth().depth_section(results)
    images = [(p, PLOTS[p.name][1]) for p in plots if p.name in PLOTS]
    images += [
        (p, f"Gradient inversion, {p.stem.removeprefix('inversion_').replace('_', ' ')}: originals (top) and "
         "reconstructions (bottom)")
        for p in sorted((run_dir / "plots").glob("inversion_*.png"))
    ]  # fmt: skip
    if images:
        blocks.append(Heading("Plots"))
        for p, caption in images:
            blocks.append(Image(p.relative_to(run_dir).as_posix(), caption, p.read_bytes()))
    blocks += [Heading("How to read this"), Bullets(HOW_TO_READ)]
    return blocks


def write_report(run_dir: Path, results: dict[str, Any], scenario: dict[str, Any] | None = None) -> list[Path]:
    """Write ``metrics.csv``, ``plots/*.png``, ``report.md`` and ``report.html`` into ``run_dir``.

    Parameters
    ----------
    run_dir : the run directory (created if needed).
    results : the content of ``results.json`` (schema_version 1 or 2); any value may be absent.
    scenario : the resolved scenario as a dict (``fed_opc.config.scenario_to_dict``); None reads
        ``run_dir/scenario.yaml`` when it exists.

    Returns
    -------
    The paths written: metrics.csv, each plot drawn, report.md, report.html.

    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    note = None
    if scenario is None:
        scenario, note = _load_scenario(run_dir)
    written = [write_metrics_csv(run_dir / "metrics.csv", results)]
    plots = write_plots(run_dir, results)
    written += plots
    blocks = report_blocks(run_dir, results, scenario, plots, note)
    md, page = run_dir / "report.md", run_dir / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    title = blocks[0].text if isinstance(blocks[0], Heading) else "fed-opc run report"
    page.write_text(to_html(blocks, title), encoding="utf-8")
    return written + [md, page]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m strategies.report RUN_DIR``: rebuild the report of a finished run from its results.json."""
    p = argparse.ArgumentParser(prog="python -m strategies.report", description=main.__doc__)
    p.add_argument("run_dir", help="a run directory holding results.json")
    args = p.parse_args(argv)
    path = Path(args.run_dir) / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        print(f"error: {path}: cannot read ({e})", file=sys.stderr)
        return 2
    if not isinstance(results, dict):
        print(f"error: {path}: not a fed-opc results file (expected a JSON object)", file=sys.stderr)
        return 2
    for f in write_report(Path(args.run_dir), results):
        print(f)
    return 0


if __name__ == "__main__":
    # run as the package module, not as __main__: strategies.depth builds its blocks from strategies.report's classes,
    # which must be the ones the renderers check
    from strategies.report import main as package_main

    sys.exit(package_main())
