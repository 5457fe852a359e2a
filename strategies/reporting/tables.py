"""The report's tables, shared by ``report.md``, ``report.html`` and ``summary.md``.

Each function takes ``results.json`` (or ``summary.json``) content and returns a :class:`Table`, or None when the run
has nothing to show in it: the headline metrics, the representation diagnostics, the deletion requests, UA per
request, the recovery attacks and the inversion attacks. The depth table is in ``depth.py``, the edge tables in
``edge.py``. A column no method has a value for is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from strategies.reporting.document import Table
from strategies.reporting.values import (
    any_method_has,
    bytes_sent,
    dig,
    fmt,
    is_stats,
    method_order,
    number,
    recovery_names,
    seed_count,
)

Column = tuple[str, Callable[[dict[str, Any]], Any], str]  # header, value of a method's entry, display kind


def method_table(
    methods: dict[str, Any], cols: list[Column], keep: Callable[[dict[str, Any]], bool] | None = None
) -> Table:
    """One row per method (in ``method_order``, those ``keep`` accepts): its name, setting and each column's value."""
    rows, classes = [], []
    for m in method_order(methods):
        e = methods[m] if isinstance(methods[m], dict) else {}
        if keep is not None and not keep(e):
            continue
        rows.append([m, str(e.get("setting", "–"))] + [fmt(get(e), kind) for _, get, kind in cols])
        classes.append(str(e.get("setting", "")))
    return Table(["method", "setting"] + [c[0] for c in cols], rows, [False, False] + [True] * len(cols), classes)


def headline_table(results: dict[str, Any]) -> Table | None:
    """Method, setting, UA, RA, TA, MIA, avg_gap (percent), RTE, rounds, client samples, MB sent and the collapse flag."""
    methods = results.get("methods") or {}
    if not methods:
        return None
    cols: list[Column] = [
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
        ("MB sent (up+down)", bytes_sent, "mb"),
        ("collapsed", lambda e: dig(e, "metrics", "collapsed"), "flag"),
    ]
    # a column nobody has (TA_forgotten_classes outside class scope, MIA when not computed) is left out
    cols = [c for c in cols if any_method_has(results, c[1])]
    return method_table(methods, cols)


def _ta_all_if_different(e: dict[str, Any]) -> Any:
    # TA is on the retained classes in class scope (SalUn); the whole test set's accuracy is shown only where it differs
    ta, ta_all = dig(e, "metrics", "TA"), dig(e, "metrics", "TA_all")
    return ta_all if number(ta_all) is not None and number(ta_all) != number(ta) else None


def diagnostics_table(results: dict[str, Any]) -> Table | None:
    """Representation diagnostics: feature norms and their ratio, forget entropy, CKA, null-space share, dead units."""
    methods = results.get("methods") or {}
    cols: list[Column] = [
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
    cols = [c for c in cols if any_method_has(results, c[1])]
    if not methods or not cols:
        return None
    return method_table(methods, cols)


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


def recovery_table(results: dict[str, Any]) -> Table | None:
    """UA after each recovery attack (percent) next to the model's own UA and the constant-predictor floor."""
    methods = results.get("methods") or {}
    names = recovery_names(results)
    if not names:
        return None
    cols: list[Column] = [
        ("model UA %", lambda e: dig(e, "metrics", "UA"), "pct"),
        ("floor UA %", lambda e: dig(e, "attacks", "recovery", "floor_UA"), "pct"),
        ("original model UA %", _original_ua, "pct"),
    ]
    cols = [c for c in cols if any_method_has(results, c[1])]
    for a in names:
        if a == "forget_probe":
            cols.append(("forget_probe acc %", lambda e: dig(e, "attacks", "recovery", "forget_probe", "acc"), "pct"))
            cols.append(
                ("forget_probe chance %", lambda e: dig(e, "attacks", "recovery", "forget_probe", "chance"), "pct")
            )
            continue
        cols.append((f"{a} UA %", lambda e, a=a: dig(e, "attacks", "recovery", a, "UA"), "pct"))
        restricted = (f"{a} UA restricted %", lambda e, a=a: dig(e, "attacks", "recovery", a, "UA_restricted"), "pct")
        if any_method_has(results, restricted[1]):
            cols.append(restricted)
    return method_table(methods, cols, keep=lambda e: isinstance(dig(e, "attacks", "recovery"), dict))


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
                gain = {"mean": gain, "std": None, "n": seed_count(v.get("psnr"))} if gain is not None else None
            with_labels |= v.get("label_acc") is not None
            informative = v.get("informative")  # a summary's is a 0/1 mean over seeds: shown as k/n seeds
            flag = (
                fmt(informative, "flag") if is_stats(informative) else {True: "yes", False: "no"}.get(informative, "–")
            )
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
