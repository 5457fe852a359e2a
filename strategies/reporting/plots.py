"""The report's figures and the helpers every figure shares (depth.py and edge.py draw with them too).

matplotlib's object API with the Agg canvas: no pyplot state, safe in a worker process. Each ``plot_*`` function takes
``results.json`` content and a path, draws when the run has something to show and returns whether it did; the list of
plots and their captions is ``PLOTS`` in ``report.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from strategies.reporting.values import (
    MB,
    RECOVERY_ATTACKS,
    REFERENCE,
    any_method_has,
    bytes_sent,
    dig,
    method_order,
    number,
    pretrain_points,
    recovery_names,
)

# One colour per setting in every plot (colour-blind safe pair), centralized also hatched so print in grey still works.
SETTING_STYLE: dict[str, dict[str, str]] = {
    "federated": {"color": "#1f6fb4", "light": "#9cc3e6", "hatch": "", "marker": "o"},
    "centralized": {"color": "#e66101", "light": "#fdb863", "hatch": "///", "marker": "s"},
}
_OTHER_STYLE = {"color": "#777777", "light": "#cccccc", "hatch": "..", "marker": "^"}


def setting_style(setting: Any) -> dict[str, str]:
    """Colour, light colour, hatch and marker of a setting (grey dots for any other)."""
    return SETTING_STYLE.get(str(setting), _OTHER_STYLE)


# ---------------------------------------------------------------------------------------------------------------------
# figure helpers (depth.py and edge.py draw with them too)


def new_figure(w: float, h: float):
    """A figure of ``w`` x ``h`` inches with the constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG at 110 dpi, without matplotlib's Software tag."""
    fig.savefig(path, dpi=110, metadata={"Software": None})


def setting_legend(fig, settings: Iterable[str]) -> None:
    """One legend entry per setting, below the panels."""
    from matplotlib.patches import Patch

    handles = []
    for s in dict.fromkeys(settings):
        st = setting_style(s)
        handles.append(Patch(facecolor=st["color"], hatch=st["hatch"], edgecolor="white", label=s))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=9.5)


_METRIC_TITLES = {
    "UA": "UA = 1 − forget accuracy (higher: more forgotten)",
    "RA": "RA: retain accuracy",
    "TA": "TA: test accuracy",
    "MIA": "MIA efficacy: forget samples judged non-members",
}


def _barh(ax, i: float, v: float, setting: str, height: float = 0.7, light: bool = False) -> None:
    st = setting_style(setting)
    ax.barh(i, v, height=height, color=st["light" if light else "color"], hatch=st["hatch"], edgecolor="white", lw=0)


# ---------------------------------------------------------------------------------------------------------------------
# the figures


def plot_pretraining(results: dict[str, Any], path: Path) -> bool:
    """Global test accuracy per pretraining round, with a dashed line at each deletion request's round."""
    pts = pretrain_points(results)
    if not pts:
        return False
    fig = new_figure(8, 4.2)
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
    save_figure(fig, path)
    return True


def plot_metrics(results: dict[str, Any], path: Path) -> bool:
    """UA / RA / TA / MIA per method, one panel per metric, bars coloured by setting, retrain references dashed."""
    methods = results.get("methods") or {}
    order = method_order(methods)
    keys = [k for k in _METRIC_TITLES if any_method_has(results, lambda e, k=k: number(dig(e, "metrics", k)))]
    if not order or not keys:
        return False
    ncols = 2 if len(keys) > 1 else 1
    nrows = math.ceil(len(keys) / ncols)
    fig = new_figure(5.6 * ncols, 0.8 + nrows * (0.3 * len(order) + 1.1))
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
                ax.axvline(100 * v, color=setting_style(s)["color"], ls="--", lw=1)
        ax.set_title(_METRIC_TITLES[key], fontsize=10)
        ax.set_xlim(-1.5, 114)
        ax.set_xlabel(f"{key} (%)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(order)), labels=order)
    axes[0, 0].invert_yaxis()  # shared y: inverting once puts the first method at the top of every panel
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle("Unlearning metrics per method (dashed: fed_retrain / retrain reference of the same colour)")
    setting_legend(fig, settings)
    save_figure(fig, path)
    return True


def plot_recovery(results: dict[str, Any], path: Path) -> bool:
    """UA after each recovery attack, one panel per attack; the constant-predictor floor and the model's UA marked."""
    methods = results.get("methods") or {}
    order = [m for m in method_order(methods) if isinstance(dig(methods, m, "attacks", "recovery"), dict)]
    names = [a for a in recovery_names(results) if a != "forget_probe"]
    names = [
        a for a in names if any(number(dig(methods, m, "attacks", "recovery", a, "UA")) is not None for m in order)
    ]
    probe = any(number(dig(methods, m, "attacks", "recovery", "forget_probe", "acc")) is not None for m in order)
    panels = names + (["forget_probe"] if probe else [])
    if not order or not panels:
        return False
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.4 * ncols, 0.9 + nrows * (0.3 * len(order) + 1.2))
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
    setting_legend(fig, settings)
    save_figure(fig, path)
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
    fig = new_figure(8.5, 1.3 + 0.62 * len(order))
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
    setting_legend(fig, settings)
    save_figure(fig, path)
    return True


def plot_cost(results: dict[str, Any], path: Path) -> bool:
    """Cost vs forgetting quality: client samples and bytes sent (log x) against avg_gap, one labelled point per method."""
    methods = results.get("methods") or {}
    order = [m for m in method_order(methods) if number(dig(methods, m, "metrics", "avg_gap")) is not None]
    panels = [
        ("client samples processed by unlearning (log scale)", lambda e: number(dig(e, "cost", "client_samples")), 1.0),
        ("bytes sent, down + up (MB, log scale)", lambda e: number(bytes_sent(e)), MB),
    ]
    if not order or not any(get(methods[m]) is not None for m in order for _, get, _ in panels):
        return False
    fig = new_figure(12, 5)
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
            st = setting_style(dig(methods, ms[0], "setting"))
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
    setting_legend(fig, [str(dig(methods, m, "setting")) for m in order])
    save_figure(fig, path)
    return True
