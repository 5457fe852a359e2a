"""Forgetting depth: normalised recovery read across methods, the gap to retraining, a verdict per method, and the
report's "Forgetting depth" section and plot (docs/metrics.md, "Forgetting depth").

Each method's ``attacks.recovery`` block holds, from ``fed_opc.attacks.recovery.run_recovery``, the original model's
forget accuracy (``acc_original``), ``measurable`` and per attack the normalised ``recovery`` (0 = no better than a
constant predictor, 1 = everything the original model knew is back). Here the methods meet:

- :func:`add_depth_gaps` gives every recovery block its ``reference`` (``fed_retrain`` for a federated method when it
  ran, else ``retrain``; ``retrain`` for a centralized one) and every attack its ``gap_to_retrain`` (recovery minus
  the reference's; negative = deeper than retraining);
- :func:`verdict` reads one method: ``collapsed``, ``deep``, ``like retrain`` or ``shallow`` by the thresholds below;
- :func:`depth_section` and :func:`plot_depth` are the report's part.

Values may be numbers (``results.json``) or ``{"mean", "std", "n"}`` leaves (``summary.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from strategies.reporting.document import Block, Bullets, Heading, Para, Table
from strategies.reporting.plots import new_figure, save_figure, setting_legend, setting_style
from strategies.reporting.values import REFERENCE, dig, fmt, method_order, number

# The verdict's thresholds (docs/metrics.md): normalised recovery of the strongest frozen read-out.
DEEP_MAX = 0.10  # at most this: deep (the read-outs land within 10% of the range on the floor)
LIKE_RETRAIN_TOL = 0.10  # at most this above the retrain reference on every read-out: like retrain
TA_COST_NOTE = 0.05  # a TA this far below the reference's is named beside the verdict (depth bought with utility)
# Read-outs of the frozen unlearned model: what is still in it. ``relearn`` trains on k forget samples, which teaches
# any model (retrain included) something, so it is shown but does not enter the verdict.
VERDICT_ATTACKS = ("fm", "hr", "probe", "prototype")
DEPTH_ATTACKS = ("fm", "hr", "probe", "prototype", "relearn")
FED_CEN_PAIRS = (("fed_opc", "opc"),)


def _methods(results: dict[str, Any]) -> dict[str, Any]:
    m = results.get("methods")
    return m if isinstance(m, dict) else {}


def _block(results: dict[str, Any], method: str) -> dict[str, Any] | None:
    b = dig(results, "methods", method, "attacks", "recovery")
    return b if isinstance(b, dict) else None


def _measurable(block: dict[str, Any] | None) -> bool | None:
    """True / False as stored (a summary's share of measurable seeds counts from one half up); None when absent."""
    if block is None or "measurable" not in block:
        return None
    v = number(block["measurable"])
    return None if v is None else v >= 0.5


def reference_of(results: dict[str, Any], method: str) -> str | None:
    """The retrain reference ``method``'s depth is compared with: ``fed_retrain`` for a federated method when it ran
    (else ``retrain``), ``retrain`` for a centralized one; None when that reference has no recovery block.
    """
    setting = dig(results, "methods", method, "setting")
    candidates = ["fed_retrain", "retrain"] if setting == "federated" else ["retrain"]
    for ref in candidates:
        if _block(results, ref) is not None:
            return ref
    return None


def add_depth_gaps(results: dict[str, Any]) -> None:
    """Give every measurable recovery block (in ``results["methods"]``, in place) its ``reference`` and every attack
    with a ``recovery`` its ``gap_to_retrain`` = recovery - the reference's recovery on the same attack.
    """
    for m in _methods(results):
        block, ref = _block(results, m), reference_of(results, m)
        if block is None or ref is None or not block.get("measurable"):
            continue
        ref_block = _block(results, ref) or {}
        block["reference"] = ref
        for a, entry in block.items():
            other = ref_block.get(a)
            if isinstance(entry, dict) and isinstance(other, dict) and "recovery" in entry and "recovery" in other:
                entry["gap_to_retrain"] = float(entry["recovery"]) - float(other["recovery"])


def recovery_of(results: dict[str, Any], method: str, attack: str) -> Any:
    """A method's normalised recovery under ``attack`` (number or summary leaf), None when absent."""
    return dig(_block(results, method), attack, "recovery")


def gap_of(results: dict[str, Any], method: str, attack: str) -> Any:
    """The stored gap to the retrain reference, else the difference of the two recoveries; None when either is absent."""
    stored = dig(_block(results, method), attack, "gap_to_retrain")
    if stored is not None:
        return stored
    ref = reference_of(results, method)
    if ref is None:
        return None
    return _diff(recovery_of(results, method, attack), recovery_of(results, ref, attack))


def verdict(results: dict[str, Any], method: str) -> tuple[str, str]:
    """``(label, reason)`` for one method: ``collapsed``, ``not measurable``, ``deep``, ``like retrain``, ``shallow``
    or ``no read-out``, with a one-line reason in words.

    The rule (docs/metrics.md): a model flagged ``collapsed`` is collapsed whatever its attacks say; otherwise the
    strongest frozen read-out (the largest normalised recovery among fm, hr, probe, prototype) decides: at most
    ``DEEP_MAX`` is deep; else at most ``LIKE_RETRAIN_TOL`` above the retrain reference on every read-out is like
    retrain (deeper than retraining included); else shallow. The reason names the utility cost when TA is more than
    ``TA_COST_NOTE`` below the reference's.
    """
    label, why = _verdict(results, method)
    ref = reference_of(results, method)
    if label in ("deep", "like retrain", "shallow") and ref is not None and ref != method:
        cost = _diff(dig(results, "methods", method, "metrics", "TA"), dig(results, "methods", ref, "metrics", "TA"))
        if cost is not None and cost < -TA_COST_NOTE:
            why += f"; at a cost: TA {100 * cost:+.1f} points against {ref}"
    return label, why


def _verdict(results: dict[str, Any], method: str) -> tuple[str, str]:
    e = dig(results, "methods", method) or {}
    if (number(dig(e, "metrics", "collapsed")) or 0.0) >= 0.5:
        return "collapsed", "the collapse rule fired (too few predicted classes, dead features or RA halved)"
    block = _block(results, method)
    if _measurable(block) is False:
        return "not measurable", "the original model is too close to the constant-predictor floor"
    vals = {a: number(recovery_of(results, method, a)) for a in VERDICT_ATTACKS}
    vals = {a: v for a, v in vals.items() if v is not None}
    if not vals:
        return "no read-out", "no frozen read-out (fm, hr, probe, prototype) ran"
    strongest = max(vals, key=lambda a: vals[a])
    r = vals[strongest]
    if r <= DEEP_MAX:
        return "deep", f"its strongest read-out ({strongest}) recovers {r:.2f} of the original's forget accuracy"
    ref = reference_of(results, method)
    if ref is None:
        return "shallow", f"{strongest} recovers {r:.2f} of the original's forget accuracy (no retrain reference)"
    if ref == method:
        return "like retrain", f"the reference itself; its strongest read-out ({strongest}) recovers {r:.2f}"
    gaps = {a: number(gap_of(results, method, a)) for a in vals}
    gaps = {a: g for a, g in gaps.items() if g is not None}
    if not gaps:
        return "shallow", f"{strongest} recovers {r:.2f}; {ref} has no value on the same read-outs"
    worst = max(gaps, key=lambda a: gaps[a])
    g = gaps[worst]
    if g <= LIKE_RETRAIN_TOL:
        how = f"no more than {ref}" if g <= 0 else f"within {LIKE_RETRAIN_TOL:.2f} above {ref}"
        return "like retrain", f"{strongest} recovers {r:.2f}, {how} on every read-out (largest gap {g:+.2f})"
    mine, theirs = vals[worst], number(recovery_of(results, ref, worst))
    return (
        "shallow",
        f"{worst} recovers {mine:.2f} of the original's forget accuracy, {g:.2f} more than {ref} ({theirs:.2f})",
    )


def depth_state(results: dict[str, Any]) -> tuple[bool | None, dict[str, float]]:
    """Whether depth is measurable in this run (None when no method has a recovery block with depth) and the numbers
    that say why: ``acc_original``, ``acc_floor``, ``range``.
    """
    for m in method_order(_methods(results)):
        block = _block(results, m)
        flag = _measurable(block)
        if flag is None:
            continue
        acc_orig, floor = number(block.get("acc_original")), number(block.get("floor_UA"))
        facts = {}
        if acc_orig is not None and floor is not None:
            facts = {"acc_original": acc_orig, "acc_floor": 1.0 - floor, "range": acc_orig - (1.0 - floor)}
        return flag, facts
    return None, {}


def not_measurable_text(facts: dict[str, float]) -> str:
    """Why depth cannot be measured, in words."""
    if not facts:
        return (
            "Depth cannot be measured in this scenario: the original model's forget accuracy is less than 15 points "
            "above the constant-predictor floor's."
        )
    a, f = 100 * facts["acc_original"], 100 * facts["acc_floor"]
    cause = (
        "a constant predictor of the largest forgotten class already scores as much as the original model"
        if facts["range"] <= 0
        else f"the original model scores only {a - f:.1f} points above it, below the 15 points needed"
    )
    return (
        f"Depth cannot be measured in this scenario: the original model's forget accuracy is {a:.1f}%, and a model that "
        f"maps every forget sample to one point (predicting the largest forgotten class) scores {f:.1f}%; {cause}. A "
        "recovery attack then cannot tell deep forgetting from shallow, so no normalised recovery is reported. Forget "
        "several classes (the OPC protocol forgets 3 of 10) or pretrain a stronger model."
    )


def _cell(results: dict[str, Any], method: str, attack: str) -> str:
    r = recovery_of(results, method, attack)
    if r is None:
        return "–"
    g = gap_of(results, method, attack)
    ref = reference_of(results, method)
    if g is None or ref == method:
        return fmt(r, "num2")
    return f"{fmt(r, 'num2')} ({fmt(g, 'gap')})"


def depth_table(results: dict[str, Any]) -> Table | None:
    """Normalised recovery per method and attack (gap to the retrain reference in parentheses), with the floor and
    the original model as rows, and each method's verdict.
    """
    methods = _methods(results)
    order = [m for m in method_order(methods) if _block(results, m) is not None]
    attacks = [a for a in DEPTH_ATTACKS if any(recovery_of(results, m, a) is not None for m in order)]
    if not order or not attacks:
        return None
    rows = [
        ["constant predictor (floor)", "–"] + ["0.00"] * len(attacks) + ["–"],
        ["original model", "–"] + ["1.00"] * len(attacks) + ["–"],
    ]
    classes = ["", ""]
    for m in order:
        setting = str(dig(methods, m, "setting") or "–")
        rows.append([m, setting] + [_cell(results, m, a) for a in attacks] + [verdict(results, m)[0]])
        classes.append(setting)
    headers = ["method", "setting"] + [f"{a} recovery" for a in attacks] + ["verdict"]
    return Table(headers, rows, [False, False] + [True] * len(attacks) + [False], classes)


def pair_table(results: dict[str, Any], fed: str, cen: str) -> Table | None:
    """Centralized and federated versions of one method side by side: recovery per attack, TA, verdict, with both
    retrain references.
    """
    methods = _methods(results)
    if _block(results, fed) is None or _block(results, cen) is None:
        return None
    cols = [cen, fed] + [r for r in ("retrain", "fed_retrain") if _block(results, r) is not None]
    attacks = [a for a in DEPTH_ATTACKS if any(recovery_of(results, m, a) is not None for m in cols)]
    rows = []
    for a in attacks:
        diff = _diff(recovery_of(results, fed, a), recovery_of(results, cen, a))
        rows.append(
            [f"{a} recovery"] + [fmt(recovery_of(results, m, a), "num2") for m in cols[:2]] + [fmt(diff, "gap")]
            + [fmt(recovery_of(results, m, a), "num2") for m in cols[2:]]
        )  # fmt: skip
    ta = [dig(methods, m, "metrics", "TA") for m in cols]
    rows.append(["TA %"] + [fmt(ta[0], "pct"), fmt(ta[1], "pct"), fmt(_diff(ta[1], ta[0], 100), "pp")])
    rows[-1] += [fmt(t, "pct") for t in ta[2:]]
    rows.append(
        ["verdict"] + [verdict(results, m)[0] for m in cols[:2]] + ["–"] + [verdict(results, m)[0] for m in cols[2:]]
    )
    headers = ["", cen, fed, f"{fed} − {cen}"] + cols[2:]
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


def _diff(a: Any, b: Any, scale: float = 1.0) -> float | None:
    x, y = number(a), number(b)
    return scale * (x - y) if x is not None and y is not None else None


def depth_section(results: dict[str, Any]) -> list[Block]:
    """The report's "Forgetting depth" section; empty when no method has a recovery block with depth."""
    flag, facts = depth_state(results)
    if flag is None:
        return []
    blocks: list[Block] = [Heading("Forgetting depth")]
    if not flag:
        return blocks + [Para(not_measurable_text(facts))]
    intro = (
        "Normalised recovery = (accuracy after the attack − floor accuracy) / (original accuracy − floor accuracy) on "
        "the forget set: 0 = no better than a constant predictor (deep), 1 = everything the original model knew is "
        "back (shallow); not clipped. In parentheses: the gap to the retrain reference (`fed_retrain` for federated "
        "methods, `retrain` for centralized ones; negative = deeper than retraining)."
    )
    if facts:
        intro += (
            f" Here the original model's forget accuracy is {100 * facts['acc_original']:.1f}% and the floor's "
            f"{100 * facts['acc_floor']:.1f}%: a range of {100 * facts['range']:.1f} points."
        )
    blocks.append(Para(intro))
    table = depth_table(results)
    if table is not None:
        blocks.append(table)
    items = []
    for m in method_order(_methods(results)):
        if _block(results, m) is not None:
            label, why = verdict(results, m)
            items.append(f"`{m}`: **{label}**: {why}.")
    if items:
        blocks += [
            Para(
                f"Verdicts (strongest frozen read-out among {', '.join(VERDICT_ATTACKS)}; deep: at most "
                f"{DEEP_MAX:.2f}; like retrain: at most {LIKE_RETRAIN_TOL:.2f} above the reference on every read-out; "
                "shallow: more; collapsed: the collapse rule fired; relearn is shown but trains on forget samples, "
                "so it does not enter the verdict):"
            ),
            Bullets(items),
        ]
    for fed, cen in FED_CEN_PAIRS:
        pair = pair_table(results, fed, cen)
        if pair is not None:
            blocks += [Para(f"Centralized `{cen}` and federated `{fed}` side by side:"), pair]
    return blocks


def plot_depth(results: dict[str, Any], path: Path) -> bool:
    """Normalised recovery per method, one panel per attack: the floor (0) and the original (1) as lines, the retrain
    references dashed in their setting's colour. Not drawn when depth is not measurable.
    """
    flag, _ = depth_state(results)
    methods = _methods(results)
    order = [m for m in method_order(methods) if _block(results, m) is not None]
    attacks = [a for a in DEPTH_ATTACKS if any(number(recovery_of(results, m, a)) is not None for m in order)]
    if not flag or not order or not attacks:
        return False
    ncols = min(3, len(attacks))
    nrows = math.ceil(len(attacks) / ncols)
    fig = new_figure(4.4 * ncols, 0.9 + nrows * (0.3 * len(order) + 1.2))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    settings = [str(dig(methods, m, "setting")) for m in order]
    vals = [number(recovery_of(results, m, a)) for m in order for a in attacks]
    vals = [v for v in vals if v is not None]
    lo, hi = min([-0.1, *vals]) - 0.05, max([1.1, *vals]) + 0.2
    for ax, a in zip(axes.flat, attacks):
        for i, m in enumerate(order):
            v = number(recovery_of(results, m, a))
            if v is None:
                ax.text(0.02, i, "n/a", va="center", fontsize=8, color="#777777")
                continue
            st = setting_style(settings[i])
            ax.barh(i, v, height=0.7, color=st["color"], hatch=st["hatch"], edgecolor="white", lw=0)
            ax.text(max(v, 0) + 0.02, i, f"{v:.2f}", va="center", fontsize=8)
        ax.axvline(0.0, color="black", lw=1.3)
        ax.axvline(1.0, color="#555555", ls=":", lw=1.2)
        for s, ref in REFERENCE.items():
            v = number(recovery_of(results, ref, a))
            if v is not None and dig(methods, ref, "setting") == s:
                ax.axvline(v, color=setting_style(s)["color"], ls="--", lw=1.2)
        ax.set_title(f"{a}: normalised recovery", fontsize=9.5)
        ax.set_xlim(lo, hi)
        ax.set_xlabel("0 = floor (deep) … 1 = original (shallow)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(order)), labels=order)
    axes[0, 0].invert_yaxis()
    for ax in list(axes.flat)[len(attacks) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Forgetting depth: normalised recovery per attack (solid: constant-predictor floor, dotted: original model,\n"
        "dashed: fed_retrain / retrain reference of the same colour; a bar left of the dashed line is deeper than "
        "retraining)",
        fontsize=10,
    )
    setting_legend(fig, settings)
    save_figure(fig, path)
    return True
