"""The human-readable side of a run directory: ``metrics.csv``, ``plots/*.png``, ``report.md`` and ``report.html``.

``write_report(run_dir, results)`` reads nothing but the ``results.json`` content it is given (and ``scenario.yaml``
when no scenario is passed), so it can rebuild the report of any finished run::

    python -m strategies.reporting runs/cifar10_100clients

This module assembles the report: the scenario and pretraining summaries, the sections in their order
(:func:`report_blocks`), the plots and their captions (``PLOTS``, :func:`write_plots`). The parts come from beside it:
``values.py`` (numbers, formats, ``metrics.csv``), ``document.py`` (blocks and renderers), ``tables.py``, ``plots.py``,
``depth.py`` (forgetting depth) and ``edge.py`` (edge federation). Every part tolerates absent values (DESIGN.md
section 6): a run without attacks has no attack plot or table, a run without requests has no request table, a run
without methods has only its pretraining.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from strategies.reporting.depth import depth_section, plot_depth
from strategies.reporting.document import Block, Bullets, Heading, Image, Para, to_html, to_markdown
from strategies.reporting.edge import device_table, latency_table, plot_latency, plot_sim_clock
from strategies.reporting.plots import plot_cost, plot_feature_norms, plot_metrics, plot_pretraining, plot_recovery
from strategies.reporting.tables import (
    diagnostics_table,
    headline_table,
    inversion_table,
    per_request_table,
    recovery_table,
    requests_table,
)
from strategies.reporting.values import bytes_sent, dig, fmt, method_order, number, pretrain_points, write_metrics_csv

# ---------------------------------------------------------------------------------------------------------------------
# the plots

# Every plot a report may hold, in the report's order, with its caption.
PLOTS: dict[str, tuple[Callable[[dict[str, Any], Path], bool], str]] = {
    "pretrain_accuracy.png": (
        plot_pretraining,
        "Global test accuracy during FL pretraining, with the deletion requests",
    ),
    "metrics.png": (plot_metrics, "UA, RA, TA and MIA per method (blue: federated, orange hatched: centralized)"),
    "recovery_attacks.png": (plot_recovery, "UA after each recovery attack, with the constant-predictor floor"),
    "depth.png": (
        plot_depth,
        "Normalised recovery per attack: 0 = constant-predictor floor, 1 = original model, dashed = retrain reference",
    ),
    "feature_norms.png": (plot_feature_norms, "Forget vs retain penultimate feature norms per method"),
    "cost_vs_gap.png": (plot_cost, "Cost (client samples, bytes) vs avg_gap per method"),
    "latency.png": (
        plot_latency,
        "How long each request waited for each federated method, in rounds and simulated hours (docs/edge.md)",
    ),
    "sim_clock.png": (
        plot_sim_clock,
        "Global test accuracy during pretraining against the simulated clock of the edge federation",
    ),
}

# The plots of a run with methods, requests and recovery attacks but no edge federation.
PLOT_FILES = (
    "pretrain_accuracy.png",
    "metrics.png",
    "recovery_attacks.png",
    "depth.png",
    "feature_norms.png",
    "cost_vs_gap.png",
)


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
# the report: its sections in order, report.md and report.html


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
    pts = pretrain_points(results)
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
            f"{fmt(bytes_sent({'cost': cost}), 'mb')} MB sent (up + down), {fmt(cost.get('failures'), 'int')} failures"
        )
    return items


def chance_warning(results: dict[str, Any], scenario: dict[str, Any] | None, margin: float = 0.10) -> str | None:
    """A warning when the pretrained model's final test accuracy is within ``margin`` of chance (1 / classes)."""
    k = num_classes(scenario)
    accs = [number(dig(r, "test_acc")) for r in dig(results, "pretrain", "rounds") or [] if isinstance(r, dict)]
    accs = [a for a in accs if a is not None]
    acc = accs[-1] if accs else number(dig(results, "pretrain", "final_test_acc"))
    if k is None or acc is None or acc > 1.0 / k + margin:
        return None
    return (
        f"**Warning: the pretrained model is near chance**: test accuracy {100 * acc:.1f}% against {100 / k:.1f}% "
        f"chance ({k} classes), within {100 * margin:.0f} points. It has learned almost nothing, so there is nothing to "
        "forget: UA, recovery and inversion results below say nothing about unlearning. Train longer or choose a "
        "model and learning rate that learn (docs/scenarios.md)."
    )


def num_classes(scenario: dict[str, Any] | None) -> int | None:
    """The scenario's number of classes (10 for CIFAR-10 and MNIST, ``data.synthetic.num_classes``), None if unknown."""
    data = (scenario or {}).get("data")
    if not isinstance(data, dict):
        return None
    name = data.get("dataset")
    if name in ("cifar10", "mnist"):
        return 10
    if name == "synthetic":
        k = dig(data, "synthetic", "num_classes")
        return int(k) if isinstance(k, int) else 10
    return None


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
    warning = chance_warning(results, scenario)
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
            latency_table(results),
            "Rounds (and simulated hours) from each request to the end of its serving, per federated method; an "
            "overdue request was not served within its deadline (docs/edge.md).",
        ),
        (
            "Edge devices",
            device_table(results),
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
            blocks += depth_section(results)
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


def main(argv: Sequence[str] | None = None, prog: str = "python -m strategies.reporting") -> int:
    """``fed-opc report RUN_DIR``: (re)build the report of a finished run from its results.json."""
    p = argparse.ArgumentParser(prog=prog, description=main.__doc__)
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
