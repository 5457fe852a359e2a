"""The human-readable outputs of a run directory: metrics.csv, plots, report.md and report.html."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import pytest

from strategies.reporting.document import to_html, to_markdown
from strategies.reporting.report import PLOT_FILES, write_report
from strategies.reporting.values import flatten_method, fmt, kind_of, lookup, method_order

FIXTURE = Path(__file__).parent / "fixtures" / "example_results.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCENARIO = {
    "name": "tiny",
    "seed": 0,
    "data": {"dataset": "synthetic", "num_clients": 5, "partition": {"kind": "dirichlet", "alpha": 0.5}},
    "model": {"arch": "small_cnn", "norm": None, "width": 8},
    "federation": {"rounds": 4, "clients_per_round": 3, "local_epochs": 1, "batch_size": 16, "lr": 0.05},
    "attacks": {"recovery": ["fm", "hr"], "inversion": {"targets": ["global_model"]}},
}


def example() -> dict:
    return json.loads(FIXTURE.read_text())


def minimal(methods: dict | None = None, requests: list | None = None) -> dict:
    """A results dict built by hand: two pretraining rounds, the given methods and requests."""
    return {
        "schema_version": 1,
        "scenario": "hand",
        "seed": 3,
        "pretrain": {"rounds": [{"round": 1, "test_acc": 0.4, "wall_s": 0.1}, {"round": 2, "test_acc": 0.6}]},
        "requests": requests or [],
        "methods": methods or {},
    }


CENTRALIZED_ONLY = {
    "opc": {
        "setting": "centralized",
        "metrics": {"UA": 0.9, "RA": 0.8, "TA": 0.7, "avg_gap": 0.1, "forget_feature_norm": 0.01},
        "cost": {"rounds": 0, "client_samples": 100, "bytes_up": 0, "bytes_down": 0},
    },
    "retrain": {
        "setting": "centralized",
        "metrics": {"UA": 1.0, "RA": 0.85, "TA": 0.75, "avg_gap": 0.0, "forget_feature_norm": 2.0},
        "cost": {"rounds": 0, "client_samples": 300, "bytes_up": 0, "bytes_down": 0},
    },
}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, list[Path]]:
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "plots").mkdir()
    # the inversion attack writes its own image grids; the report only embeds them
    (run_dir / "plots" / "inversion_global_model.png").write_bytes(_tiny_png())
    return run_dir, write_report(run_dir, example(), SCENARIO)


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 4), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_every_file_is_written(full_run):
    run_dir, written = full_run
    expected = {"metrics.csv", "report.md", "report.html"} | {f"plots/{p}" for p in PLOT_FILES}
    assert {p.relative_to(run_dir).as_posix() for p in written} == expected
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)


def test_plots_are_valid_pngs(full_run):
    from matplotlib.image import imread

    run_dir, _ = full_run
    for name in PLOT_FILES:
        path = run_dir / "plots" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        img = imread(path)
        assert img.shape[0] > 300 and img.shape[1] > 600, (name, img.shape)
        assert path.stat().st_size > 10_000, name
        assert img[..., :3].std() > 0.05, f"{name} looks blank"


def test_html_is_self_contained_with_every_plot(full_run):
    run_dir, _ = full_run
    page = (run_dir / "report.html").read_text()
    pngs = sorted((run_dir / "plots").glob("*.png"))
    assert len(pngs) == len(PLOT_FILES) + 1  # + the inversion grid
    assert page.count('<img src="data:image/png;base64,') == len(pngs)
    assert "http" not in page
    assert not re.search(r"<(link|script)\b", page)
    # same content as the Markdown: every section heading and the headline row
    md = (run_dir / "report.md").read_text()
    for heading in re.findall(r"^## (.+)$", md, flags=re.M):
        assert f"<h2>{heading}</h2>" in page
    for name in pngs:
        assert f"](plots/{name.name})" in md


def test_report_tables_show_percent_and_sections(full_run):
    run_dir, _ = full_run
    md = (run_dir / "report.md").read_text()
    assert "| fed_opc | federated | 0.0 | 100.0 | 100.0 | 8.8 | 51.5 | 0.92 | 5 | 2,544 | 1.48 | no |" in md
    assert "| fed_eraser | federated | 62.5 |" in md and md.count("| yes |") == 2  # fed_eraser and retrain collapsed
    for section in (
        "## Scenario",
        "## Pretraining",
        "## Deletion requests",
        "## Headline",
        "## UA per request",
        "## Recovery attacks",
        "## Inversion attacks",
        "## Plots",
        "## How to read this",
    ):
        assert section in md
    assert (
        "dataset: synthetic" in md and "partition: dirichlet (alpha=0.5)" in md and "model: small_cnn (width=8)" in md
    )
    assert "final test accuracy: 81.2% (round 4)" in md and "cached: no" in md
    assert "| r1 | 2 | class | 4 | 16 | 0 | 2 | done |" in md
    assert "| fed_retrain | federated | 48.4 | 100.0 |" in md  # per-request UA
    assert "| fed_opc | federated | global_model | 13.10 | 12.60 | 0.50 | 0.120 |" in md


def test_metrics_csv_has_one_row_per_method_and_metric(full_run):
    run_dir, _ = full_run
    results = example()
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "setting", "metric", "value"]
    keys = [(r["method"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    for m, entry in results["methods"].items():
        mine = [r for r in rows if r["method"] == m]
        n_attack = len([k for k, _ in flatten_method(entry) if k.startswith("attack.")])
        n_requests = len(results["requests"])
        assert len(mine) == len(entry["metrics"]) + len(entry["cost"]) + n_attack + n_requests
        assert {r["setting"] for r in mine} == {entry["setting"]}
    value = {(r["method"], r["metric"]): r["value"] for r in rows}
    # numbers are written unformatted: they read back exactly
    assert float(value[("fed_opc", "MIA")]) == results["methods"]["fed_opc"]["metrics"]["MIA"]
    assert value[("fed_opc", "cost.client_samples")] == "2544"
    assert float(value[("opc", "attack.recovery.fm.UA")]) == 0.5
    assert float(value[("pga", "attack.recovery.relearn.steps[2]")]) == 20
    assert float(value[("fed_retrain", "request.r1.UA")]) == 1.0
    assert not any("per_image" in k for _, k in keys)


def test_method_order_puts_counterparts_side_by_side():
    order = method_order(example()["methods"])
    assert order[:6] == ["fed_opc", "opc", "fed_retrain", "retrain", "fed_finetune", "finetune"]
    assert sorted(order) == sorted(example()["methods"])


def test_fmt_and_lookup():
    assert fmt(0.12345, "pct") == "12.3"
    assert fmt(None, "pct") == "–"
    assert fmt({"mean": 0.3, "std": 0.1414, "n": 2}, "pct") == "30.0 ± 14.1"
    assert fmt({"mean": 0.5, "std": 0.7, "n": 2}, "flag") == "1/2"
    assert fmt(1, "flag") == "yes"
    assert fmt(1_479_360, "mb") == "1.48"
    assert fmt(0.0428, kind_of("attack.recovery.fm.recovery")) == "0.04"
    assert fmt(-0.2429, kind_of("attack.recovery.fm.gap_to_retrain")) == "-0.24"
    assert fmt({"mean": 0.1, "std": 0.05, "n": 2}, "gap") == "+0.10 ± 0.05"
    results = example()
    assert lookup(results, "fed_opc", "UA") == 0.0
    assert lookup(results, "fed_opc", "cost.bytes_up") == 616400
    assert lookup(results, "fed_opc", "attack.recovery.hr.UA_restricted") == 0.45
    assert lookup(results, "fed_opc", "attack.recovery.relearn.steps[1]") == 5
    assert lookup(results, "opc", "request.r0.UA") == 0.1875
    assert lookup(results, "opc", "attack.inversion.model_difference.psnr") is None
    assert lookup(results, "no_such_method", "UA") is None


def test_markdown_and_html_renderers_escape():
    from strategies.reporting.document import Para, Table

    blocks = [Para("a `b` <c>"), Table(["x|y", "n"], [["<b>", "1"]], [False, True])]
    assert "x\\|y" in to_markdown(blocks)
    page = to_html(blocks, "t")
    assert "<code>b</code>" in page and "&lt;c&gt;" in page and "&lt;b&gt;" in page


def test_results_without_methods_or_requests(tmp_path):
    written = write_report(tmp_path, minimal())
    names = {p.name for p in written}
    assert names == {"metrics.csv", "pretrain_accuracy.png", "report.md", "report.html"}
    assert (tmp_path / "metrics.csv").read_text() == "method,setting,metric,value\n"
    md = (tmp_path / "report.md").read_text()
    assert "No deletion request" in md and "No unlearning method" in md and "## Headline" not in md
    assert "final test accuracy: 60.0% (round 2)" in md
    # nothing at all: still a report
    empty = tmp_path / "empty"
    assert {p.name for p in write_report(empty, {})} == {"metrics.csv", "report.md", "report.html"}


def test_only_centralized_methods_and_no_attacks(tmp_path):
    req = {"id": "r0", "client": "all", "scope": "class", "round": 2, "classes": [1], "metrics": {"opc": {"UA": 0.95}}}
    results = minimal(copy.deepcopy(CENTRALIZED_ONLY), [req])
    # a recovery plot left by an earlier report of this directory must not survive a report without attacks
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "recovery_attacks.png").write_bytes(_tiny_png())
    written = {p.name for p in write_report(tmp_path, results)}
    assert "recovery_attacks.png" not in written and not (tmp_path / "plots" / "recovery_attacks.png").exists()
    assert {"metrics.png", "feature_norms.png", "cost_vs_gap.png", "pretrain_accuracy.png"} <= written
    md = (tmp_path / "report.md").read_text()
    assert "## Recovery attacks" not in md and "## Inversion attacks" not in md
    assert "MIA" not in md.split("## Headline")[1].split("##")[0]  # no method has MIA: no MIA column
    assert "| opc | centralized | 95.0 |" in md and "| retrain | centralized | – |" in md
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(written) - 3


def test_scenario_is_read_from_the_run_directory(tmp_path):
    import yaml

    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    write_report(tmp_path, minimal())
    assert "clients: 5, partition: dirichlet (alpha=0.5)" in (tmp_path / "report.md").read_text()
    (tmp_path / "scenario.yaml").write_text("data: [unclosed")
    write_report(tmp_path, minimal())
    assert "scenario.yaml could not be read" in (tmp_path / "report.md").read_text()


def test_report_cli_rebuilds_a_run(tmp_path, capsys):
    from strategies.reporting.report import main

    (tmp_path / "results.json").write_text(json.dumps(minimal()))
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file()
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]


# ---------------------------------------------------------------------------------------------------------------------
# forgetting depth (strategies.reporting.depth)


def test_depth_section_reads_the_fixture(full_run):
    run_dir, _ = full_run
    md = (run_dir / "report.md").read_text()
    depth = md.split("## Forgetting depth")[1].split("\n## ")[0]
    assert "original model's forget accuracy is 95.0% and the floor's 25.0%: a range of 70.0 points" in depth
    assert "| constant predictor (floor) | – | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | – |" in depth
    assert "| original model | – | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | – |" in depth
    # fed_opc: fm UA 0.72 over floor UA 0.75 and original accuracy 0.95 -> (0.28 - 0.25) / 0.70 = 0.04; fed_retrain's
    # fm UA 0.55 -> 0.29, so the gap is -0.24
    assert (
        "| fed_opc | federated | 0.04 (-0.24) | 0.01 (-0.27) | 0.07 (-0.14) | 0.03 (-0.16) | 0.64 (+0.00) | deep |"
        in (depth)
    )
    assert (
        "| opc | centralized | 0.36 (+0.14) | 0.29 (+0.07) | 0.21 (+0.07) | 0.19 (+0.04) | 0.64 (+0.00) | shallow |"
        in (depth)
    )
    assert "| fed_retrain | federated | 0.29 | 0.29 | 0.21 | 0.19 | 0.64 | like retrain |" in depth
    assert (
        "- `opc`: **shallow**: fm recovers 0.36 of the original's forget accuracy, 0.14 more than retrain (0.21)."
        in (depth)
    )
    assert "- `fed_eraser`: **collapsed**" in depth and "- `retrain`: **collapsed**" in depth
    assert (
        "- `fed_finetune`: **like retrain**: fm recovers 0.36, within 0.10 above fed_retrain on every read-out" in depth
    )
    # centralized vs federated OPC side by side
    assert "|  | opc | fed_opc | fed_opc − opc | retrain | fed_retrain |" in depth
    assert "| fm recovery | 0.36 | 0.04 | -0.31 | 0.21 | 0.29 |" in depth
    assert "| TA % | 83.7 | 100.0 | +16.3 | 35.0 | 58.7 |" in depth
    assert "| verdict | shallow | deep | – | collapsed | like retrain |" in depth
    assert "<strong>deep</strong>" in (run_dir / "report.html").read_text()


def _depth_method(setting, recoveries, collapsed=0, measurable=True, floor=0.7, acc_original=0.9):
    """A method entry whose recovery block holds the given normalised recoveries (as UAs that produce them)."""
    span = acc_original - (1 - floor)
    block = {"floor_UA": floor, "acc_original": acc_original, "measurable": measurable}
    for a, r in recoveries.items():
        block[a] = {"UA": 1 - ((1 - floor) + r * span)} | ({"recovery": r} if measurable else {})
    return {
        "setting": setting,
        "metrics": {"UA": 0.5, "TA": 0.8, "collapsed": collapsed},
        "attacks": {"recovery": block},
    }


def test_depth_gaps_and_verdicts_by_hand():
    from strategies.reporting.depth import add_depth_gaps, verdict

    methods = {
        "fed_opc": _depth_method("federated", {"fm": 0.05, "hr": 0.10, "relearn": 0.9}),  # relearn does not count
        "fed_finetune": _depth_method("federated", {"fm": 0.45, "hr": 0.30}),
        "fed_ga": _depth_method("federated", {"fm": 0.50, "hr": 0.20}),
        "fed_rl": _depth_method("federated", {"fm": 0.00, "hr": 0.00}, collapsed=1),
        "fed_retrain": _depth_method("federated", {"fm": 0.40, "hr": 0.25}),
        "opc": _depth_method("centralized", {"fm": 0.20, "hr": 0.15}),
        "retrain": _depth_method("centralized", {"fm": 0.30, "hr": 0.20}),
    }
    results = minimal(methods)
    add_depth_gaps(results)
    rec = lambda m: results["methods"][m]["attacks"]["recovery"]  # noqa: E731
    assert rec("fed_opc")["reference"] == "fed_retrain" and rec("opc")["reference"] == "retrain"
    assert rec("fed_opc")["fm"]["gap_to_retrain"] == pytest.approx(0.05 - 0.40)
    assert rec("opc")["hr"]["gap_to_retrain"] == pytest.approx(0.15 - 0.20)
    assert "gap_to_retrain" not in rec("fed_opc")["relearn"]  # fed_retrain ran no relearn
    assert rec("fed_retrain")["fm"]["gap_to_retrain"] == 0.0
    labels = {m: verdict(results, m)[0] for m in methods}
    assert labels == {
        "fed_opc": "deep",  # strongest read-out 0.10 <= 0.10
        "fed_finetune": "like retrain",  # fm +0.05, hr +0.05 above fed_retrain
        "fed_ga": "like retrain",  # fm +0.10: at the tolerance
        "fed_rl": "collapsed",  # at the floor, but a degenerate model
        "fed_retrain": "like retrain",  # the reference itself
        "opc": "like retrain",  # deeper than retrain on both read-outs
        "retrain": "like retrain",
    }
    assert verdict(results, "opc")[1] == "fm recovers 0.20, no more than retrain on every read-out (largest gap -0.05)"
    # depth bought with utility is named: TA 10 points below the reference's (more than 5)
    results["methods"]["fed_finetune"]["metrics"]["TA"] = 0.7
    assert verdict(results, "fed_finetune") == (
        "like retrain",
        "fm recovers 0.45, within 0.10 above fed_retrain on every read-out (largest gap +0.05); "
        "at a cost: TA -10.0 points against fed_retrain",
    )
    results["methods"]["fed_ga"]["attacks"]["recovery"]["hr"]["recovery"] = 0.36  # +0.11 above fed_retrain
    results["methods"]["fed_ga"]["attacks"]["recovery"]["hr"]["gap_to_retrain"] = 0.36 - 0.25
    assert verdict(results, "fed_ga")[0] == "shallow"
    # without fed_retrain a federated method is read against retrain
    del results["methods"]["fed_retrain"]
    for e in results["methods"].values():
        for entry in e["attacks"]["recovery"].values():
            if isinstance(entry, dict):
                entry.pop("gap_to_retrain", None)
    add_depth_gaps(results)
    assert rec("fed_finetune")["reference"] == "retrain"
    assert rec("fed_finetune")["fm"]["gap_to_retrain"] == pytest.approx(0.45 - 0.30)
    assert verdict(results, "fed_finetune")[0] == "shallow"


def test_depth_not_measurable_is_said_in_words(tmp_path):
    # one forgotten class: the floor UA is 0, so a constant predictor scores 100%, above the original's 90%
    methods = {
        "opc": _depth_method("centralized", {"fm": 0.0}, measurable=False, floor=0.0, acc_original=0.9),
        "retrain": _depth_method("centralized", {"fm": 0.0}, measurable=False, floor=0.0, acc_original=0.9),
    }
    written = {p.name for p in write_report(tmp_path, minimal(methods))}
    assert "depth.png" not in written and "recovery_attacks.png" in written
    md = (tmp_path / "report.md").read_text()
    depth = md.split("## Forgetting depth")[1].split("\n## ")[0]
    assert "Depth cannot be measured in this scenario: the original model's forget accuracy is 90.0%" in depth
    assert "scores 100.0%; a constant predictor of the largest forgotten class already scores as much" in depth
    assert "recovery |" not in depth  # no table of numbers that mean nothing
    # a small range above the floor: the shortfall in points
    methods = {"opc": _depth_method("centralized", {"fm": 0.0}, measurable=False, floor=0.5, acc_original=0.6)}
    write_report(tmp_path, minimal(methods))
    assert "only 10.0 points above it, below the 15 points needed" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    "dataset,acc,warned",
    [("mnist", 0.19, True), ("mnist", 0.25, False), ("synthetic", 0.34, True), ("synthetic", 0.36, False)],
)
def test_report_warns_first_when_the_pretrained_model_is_near_chance(tmp_path, dataset, acc, warned):
    results = minimal()
    results["pretrain"]["rounds"][-1]["test_acc"] = acc
    scenario = {"name": "x", "data": {"dataset": dataset, "synthetic": {"num_classes": 4}}}
    write_report(tmp_path, results, scenario)
    lines = (tmp_path / "report.md").read_text().splitlines()
    chance = 10.0 if dataset == "mnist" else 25.0
    expected = f"**Warning: the pretrained model is near chance**: test accuracy {100 * acc:.1f}% against {chance:.1f}%"
    assert lines[2].startswith(expected) if warned else not any("near chance" in line for line in lines)


def test_report_module_run_rebuilds_the_depth_section(tmp_path, monkeypatch):
    import runpy
    import sys

    (tmp_path / "results.json").write_text(FIXTURE.read_text())
    monkeypatch.setattr(sys, "argv", ["python -m strategies.reporting", str(tmp_path)])
    with pytest.raises(SystemExit) as done:  # ``python -m strategies.reporting RUN_DIR``, in this process
        runpy.run_module("strategies.reporting", run_name="__main__")
    assert done.value.code == 0
    md = (tmp_path / "report.md").read_text()
    assert "## Forgetting depth" in md and "- `fed_opc`: **deep**" in md


def test_inversion_table_starts_with_the_calibration_rows():
    from strategies.reporting.tables import inversion_table

    v = lambda p, informative: {"psnr": p, "baseline_psnr": 12.0, "ssim": 0.25, "informative": informative}  # noqa: E731
    results = {
        "inversion_reference": {"original_global_model": v(13.0, False), "untrained_global_model": v(17.0, True)},
        "methods": {"opc": {"setting": "centralized", "attacks": {"inversion": {"global_model": v(12.5, False)}}}},
    }
    t = inversion_table(results)
    assert t.headers[-1] == "informative"
    assert [r[0] for r in t.rows] == ["original (calibration)", "untrained", "opc"]
    assert t.rows[0] == ["original (calibration)", "–", "global_model", "13.00", "12.00", "1.00", "0.250", "no"]
    assert [r[-1] for r in t.rows] == ["no", "yes", "no"]
