"""The report's edge-federation parts: request latency per method, device cost, accuracy against the simulated clock.

Reads only ``results.json`` content (docs/edge.md lists the keys); draws nothing when a run has none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strategies.reporting.document import Table
from strategies.reporting.plots import SETTING_STYLE, new_figure, save_figure
from strategies.reporting.values import dig, fmt, method_order, number


def _latency_rows(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = []
    for req in results.get("requests") or []:
        per = req.get("latency") or {}
        for m in method_order({k: results.get("methods", {}).get(k, {}) for k in per}):
            rows.append((str(req.get("id")), m, per[m]))
    return rows


def latency_table(results: dict[str, Any]) -> Table | None:
    """One row per request and federated method: requested / served round, latency, overdue, served by."""
    rows = _latency_rows(results)
    if not rows:
        return None
    with_s = any("latency_s" in e for _, _, e in rows)
    with_deadline = any("overdue" in e for _, _, e in rows)
    headers = ["request", "method", "requested", "served", "latency (rounds)"]
    headers += ["latency (sim. h)"] if with_s else []
    headers += ["overdue"] if with_deadline else []
    headers += ["served by"]
    out = []
    for rid, m, e in rows:
        row = [rid, m, str(e.get("requested_round", "")), str(e.get("served_round", "")), str(e["latency_rounds"])]
        if with_s:
            s = number(e.get("latency_s"))
            row.append(f"{s / 3600:.2f}" if s is not None else "")
        if with_deadline:
            row.append({True: "yes", False: "no"}.get(e.get("overdue"), ""))
        row.append(str(e.get("served_by", m)))
        out.append(row)
    numeric = [False, False, True, True, True] + [True] * with_s + [False] * with_deadline + [False]
    return Table(headers, out, numeric)


def device_table(results: dict[str, Any]) -> Table | None:
    """Per federated method: its world's simulated time, stragglers, offline requesters, and each profile's cost."""
    methods = {m: e for m, e in (results.get("methods") or {}).items() if e.get("edge")}
    if not methods:
        return None
    profiles = sorted({p for e in methods.values() for p in (dig(e, "edge", "devices") or {})})
    headers = ["method", "offline rounds"]
    if profiles:
        headers += ["sim. hours", "stragglers"] + [f"{p} busy h / MB" for p in profiles]
    rows = []
    for m in method_order(methods):
        edge = methods[m]["edge"]
        row = [m, str(edge.get("offline_met", 0))]
        if profiles:
            row += [f"{edge.get('sim_seconds', 0.0) / 3600:.2f}", str(edge.get("stragglers", 0))]
            for p in profiles:
                d = dig(edge, "devices", p) or {}
                row.append(f"{d.get('busy_s', 0.0) / 3600:.2f} / {fmt(d.get('bytes', 0) / 1e6, 'num')}")
        rows.append(row)
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


def plot_latency(results: dict[str, Any], path: Path) -> bool:
    """Latency of each request per method, in rounds (and simulated hours where device profiles exist)."""
    rows = _latency_rows(results)
    if not rows:
        return False
    with_s = any("latency_s" in e for _, _, e in rows)
    fig = new_figure(8, 0.45 * len(rows) + 1.6)
    axes = fig.subplots(1, 2 if with_s else 1, sharey=True, squeeze=False)[0]
    labels = [f"{rid} · {m}" + (f" (by {e['served_by']})" if e.get("served_by", m) != m else "") for rid, m, e in rows]
    colour = SETTING_STYLE["federated"]["color"]
    ys = range(len(rows))
    axes[0].barh(ys, [e["latency_rounds"] for _, _, e in rows], color=colour)
    axes[0].set_xlabel("latency (rounds)")
    axes[0].set_yticks(list(ys), labels, fontsize=9)
    axes[0].invert_yaxis()
    if with_s:
        axes[1].barh(ys, [(number(e.get("latency_s")) or 0.0) / 3600 for _, _, e in rows], color=colour)
        axes[1].set_xlabel("latency (simulated hours)")
    for i, (_, _, e) in enumerate(rows):
        if e.get("overdue"):
            axes[0].annotate(
                "overdue", (e["latency_rounds"], i), xytext=(4, -3), textcoords="offset points", fontsize=8
            )
    save_figure(fig, path)
    return True


def plot_sim_clock(results: dict[str, Any], path: Path) -> bool:
    """Global test accuracy of FL pretraining against the simulated clock."""
    pts = [
        (number(r.get("sim_s")), number(r.get("test_acc")))
        for r in dig(results, "pretrain", "rounds") or []
        if number(r.get("sim_s")) is not None and number(r.get("test_acc")) is not None
    ]
    if not pts:
        return False
    fig = new_figure(8, 4.0)
    ax = fig.add_subplot()
    ax.plot([p[0] / 3600 for p in pts], [100 * p[1] for p in pts], marker="o", ms=3.5, lw=1.6)
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return True
