"""Multi-seed summaries and the comparison of runs (strategies.reporting.summary, strategies.reporting.compare,
scripts/compare.py)."""

from __future__ import annotations

import copy
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from strategies.reporting.compare import CompareError, comparison, load_run, load_runs, main
from strategies.reporting.summary import stats, summarize, write_summary

REPO = Path(__file__).resolve().parents[3]
FIXTURE = Path(__file__).parent / "fixtures" / "example_results.json"


def seed(seed: int, ua: float, mia: float | None = None, scenario: str = "hand") -> dict:
    """A hand-made results dict of one seed: fed_opc and opc, one request."""
    fed_metrics = {"UA": ua, "RA": 0.9, "collapsed": seed % 2}
    if mia is not None:
        fed_metrics["MIA"] = mia
    return {
        "schema_version": 1,
        "scenario": scenario,
        "seed": seed,
        "pretrain": {"rounds": [{"round": 1, "test_acc": 0.5}, {"round": 2, "test_acc": 0.6 + 0.1 * seed}]},
        "requests": [
            {
                "id": "r0",
                "client": 3,
                "scope": "client",
                "round": 2,
                "n_forget": 100 + seed,
                "status": "done",
                "clients": [3],
                "metrics": {"fed_opc": {"UA": ua}},
            }
        ],
        "methods": {
            "fed_opc": {
                "setting": "federated",
                "metrics": fed_metrics,
                "cost": {"rounds": 5, "client_samples": 1000 * (seed + 1)},
                "attacks": {"recovery": {"floor_UA": 0.8, "relearn": {"UA": 0.3, "steps": [1, 5]}}},
                "diagnostics": {"unlearning_rounds": [{"round": 3, "served": True}], "radius": 2.0},
            },
            "opc": {"setting": "centralized", "metrics": {"UA": 0.5}, "cost": {"rounds": 0}},
        },
        "wall_s": 10.0 + seed,
    }


def test_stats_exact():
    s = stats([0.2, 0.4])
    assert s["mean"] == pytest.approx(0.3) and s["n"] == 2
    assert s["std"] == pytest.approx(math.sqrt(0.02))  # sample std, ddof = 1: 0.1414...
    assert stats([0.7]) == {"mean": 0.7, "std": 0.0, "n": 1}
    assert stats([1, 2, 3, 4])["std"] == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError):
        stats([])


def test_summarize_means_stds_and_missing_values():
    s = summarize([seed(0, 0.2, mia=0.5), seed(1, 0.4)])
    fed = s["methods"]["fed_opc"]
    assert fed["setting"] == "federated"
    assert fed["metrics"]["UA"]["mean"] == pytest.approx(0.3)
    assert fed["metrics"]["UA"]["std"] == pytest.approx(0.1414213562)
    assert fed["metrics"]["MIA"] == {"mean": 0.5, "std": 0.0, "n": 1}  # absent in seed 1: averaged over seed 0 alone
    assert fed["metrics"]["collapsed"] == {"mean": 0.5, "std": pytest.approx(math.sqrt(0.5)), "n": 2}
    assert fed["cost"]["client_samples"]["mean"] == 1500
    assert fed["attacks"]["recovery"]["relearn"]["steps"][1] == {"mean": 5.0, "std": 0.0, "n": 2}
    assert fed["diagnostics"] == {"radius": {"mean": 2.0, "std": 0.0, "n": 2}}  # per-round records are not averaged
    assert s["methods"]["opc"]["metrics"]["UA"] == {"mean": 0.5, "std": 0.0, "n": 2}
    assert s["pretrain"]["final_test_acc"]["mean"] == pytest.approx(0.65)
    assert s["pretrain"]["rounds"][0]["test_acc"] == {"mean": 0.5, "std": 0.0, "n": 2}
    (r0,) = s["requests"]
    assert r0["id"] == "r0" and r0["scope"] == "client" and r0["clients"] == [3] and r0["status"] == "done"
    assert r0["n_forget"]["mean"] == 100.5 and r0["metrics"]["fed_opc"]["UA"]["mean"] == pytest.approx(0.3)
    assert s["seeds"] == [0, 1] and s["n_seeds"] == 2 and s["wall_s"]["mean"] == 10.5


def test_summarize_tolerates_missing_blocks_and_rejects_bad_input():
    s = summarize([{"scenario": "x", "seed": 0}, {"scenario": "x", "seed": 1, "methods": {}}])
    assert s["methods"] == {} and s["requests"] == [] and s["pretrain"] == {}
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(ValueError, match="different scenarios"):
        summarize([seed(0, 0.1), seed(1, 0.2, scenario="other")])


def test_write_summary_files(tmp_path):
    paths = write_summary(tmp_path, [seed(0, 0.2, mia=0.5), seed(1, 0.4)])
    assert [p.name for p in paths] == ["summary.json", "summary.md", "summary.csv"]
    assert json.loads(paths[0].read_text())["methods"]["fed_opc"]["metrics"]["UA"]["n"] == 2
    md = paths[1].read_text()
    assert "| fed_opc | federated | 30.0 ± 14.1 |" in md
    assert "| fed_opc | MIA | 1 of 2 |" in md  # values missing in some seeds are listed
    assert "ddof=1" in md
    with open(paths[2], newline="") as f:
        rows = list(csv.DictReader(f))
    ua = next(r for r in rows if r["method"] == "fed_opc" and r["metric"] == "UA")
    assert float(ua["mean"]) == pytest.approx(0.3) and float(ua["std"]) == pytest.approx(0.1414213562)
    assert ua["n"] == "2"
    assert any(r["method"] == "pretrain" and r["metric"] == "final_test_acc" for r in rows)
    steps = next(r for r in rows if r["method"] == "fed_opc" and r["metric"] == "attack.recovery.relearn.steps[1]")
    assert (float(steps["mean"]), float(steps["std"]), steps["n"]) == (5.0, 0.0, "2")


def _run_dir(root: Path, name: str, results: dict) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(results))
    return d


def test_compare_single_and_multi_seed_runs(tmp_path, capsys):
    single = _run_dir(tmp_path, "example", json.loads(FIXTURE.read_text()))
    multi = tmp_path / "multi"
    for s, ua in ((0, 0.2), (1, 0.4)):
        _run_dir(multi, f"seed_{s}", seed(s, ua))
    write_summary(multi, [seed(0, 0.2), seed(1, 0.4)])
    md_path = tmp_path / "cmp.md"
    assert main([str(single), str(multi), "--markdown", str(md_path)]) == 0
    out = capsys.readouterr().out
    for m in json.loads(FIXTURE.read_text())["methods"]:
        assert m in out
    assert "30.0 ± 14.1" in out and "0,1 (n=2)" in out
    md = md_path.read_text()
    assert "| multi | 0,1 (n=2) | fed_opc | federated | 30.0 ± 14.1 | 90.0 ± 0.0 |" in md
    assert "| example | 0 | fed_opc | federated | 0.0 | 100.0 | 100.0 | 8.8 | 51.5 |" in md


def test_compare_groups_by_method_and_reads_dotted_metrics(tmp_path):
    a = load_run(_run_dir(tmp_path, "a", seed(0, 0.2)))
    b = load_run(_run_dir(tmp_path, "b", seed(1, 0.4)))
    headers, rows, starts = comparison([a, b], ["UA", "cost.client_samples", "attack.recovery.floor_UA"], "method")
    assert headers[-3:] == ["UA %", "cost.client_samples", "attack.recovery.floor_UA %"]
    assert [(r[0], r[2]) for r in rows] == [("a", "fed_opc"), ("b", "fed_opc"), ("a", "opc"), ("b", "opc")]
    assert starts == [0, 2]
    assert rows[1][4:] == ["40.0", "2,000", "80.0"] and rows[2][5:] == ["–", "–"]


def test_compare_summarises_seed_folders_without_summary_json(tmp_path):
    for s, ua in ((0, 0.2), (1, 0.4)):
        _run_dir(tmp_path / "multi", f"seed_{s}", seed(s, ua))
    run = load_run(tmp_path / "multi")
    assert run.source == "seed_*/results.json" and run.data["methods"]["fed_opc"]["metrics"]["UA"]["n"] == 2


def test_compare_same_folder_names_are_told_apart(tmp_path):
    runs = load_runs([_run_dir(tmp_path / "x", "run", seed(0, 0.1)), _run_dir(tmp_path / "y", "run", seed(0, 0.1))])
    assert runs[0].label != runs[1].label


def test_compare_markdown_to_stdout_and_runs_without_methods(tmp_path, capsys):
    d = _run_dir(tmp_path, "empty", {"scenario": "e", "seed": 0})
    assert main([str(d), "--markdown", "-"]) == 0
    out = capsys.readouterr().out
    assert "(no methods)" in out and "# fed-opc run comparison" in out


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "no such directory"),
        (lambda p: p, "no results.json or summary.json"),
        (lambda p: (p / "results.json").write_text('{"methods": {') and p, "not valid JSON"),
        (lambda p: (p / "results.json").write_text("[1, 2]") and p, "not a fed-opc results file"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, expected):
    path = make(tmp_path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(path) in err[0]
    with pytest.raises(CompareError):
        load_run(path)


def test_compare_script_from_a_checkout(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare.py"), str(missing)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repo: the script must find the package itself
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {missing}: no such directory"]
    ok = _run_dir(tmp_path, "ok", copy.deepcopy(seed(0, 0.25)))
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare.py"), str(ok), "--metrics", "UA", "RA"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fed_opc" in proc.stdout and "opc" in proc.stdout and "25.0" in proc.stdout


def test_summary_reads_depth_on_the_means(tmp_path):
    runs = []
    for s, fm in ((0, 0.04), (1, 0.08)):
        r = seed(s, 0.5)
        r["methods"]["fed_opc"]["attacks"]["recovery"] = {
            "floor_UA": 0.8,
            "acc_original": 0.9,
            "measurable": True,
            "fm": {"UA": 0.7, "recovery": fm},
        }
        r["methods"]["fed_opc"]["metrics"]["collapsed"] = 0
        runs.append(r)
    md = write_summary(tmp_path, runs)[1].read_text()
    assert "## Forgetting depth" in md
    assert "| fed_opc | federated | 0.06 ± 0.03 | deep |" in md


def test_compare_reads_normalised_recovery_and_the_gap_to_retrain(tmp_path):
    run = load_run(_run_dir(tmp_path, "example", json.loads(FIXTURE.read_text())))
    metrics = ["attack.recovery.fm.recovery", "attack.recovery.fm.gap_to_retrain", "attack.recovery.acc_original"]
    headers, rows, _ = comparison([run], metrics, "run")
    assert headers[-3:] == metrics[:2] + ["attack.recovery.acc_original %"]
    fed_opc = next(r for r in rows if r[2] == "fed_opc")
    # fm UA 0.72, floor UA 0.75, original forget accuracy 0.95: (0.28 - 0.25) / 0.70; fed_retrain's (0.45 - 0.25) / 0.70
    assert fed_opc[4:] == ["0.04", "-0.24", "95.0"]


def test_summary_has_the_inversion_with_its_calibration_rows(tmp_path):
    runs = []
    for s, (orig, flat, informative, opc) in enumerate([(19.0, 16.0, True, 17.0), (15.5, 15.0, False, 15.0)]):
        r = seed(s, 0.2)
        r["inversion_reference"] = {
            "original_global_model": {"psnr": orig, "baseline_psnr": flat, "informative": informative},
            "untrained_global_model": {"psnr": 18.0, "baseline_psnr": flat},
        }
        r["methods"]["opc"]["attacks"] = {"inversion": {"global_model": {"psnr": opc, "baseline_psnr": flat}}}
        runs.append(r)
    summary = summarize(runs)
    original = summary["inversion_reference"]["original_global_model"]
    assert original["psnr"] == {"mean": 17.25, "std": stats([19.0, 15.5])["std"], "n": 2}
    assert original["informative"]["mean"] == 0.5  # one seed of two
    md = write_summary(tmp_path, runs)[1].read_text()
    assert "## Gradient inversion" in md
    # PSNR 17.25 ± 2.47, flat 15.50 ± 0.71, gain 17.25 - 15.50 = 1.75, informative in 1 of 2 seeds
    assert "| original (calibration) | – | global_model | 17.25 ± 2.47 | 15.50 ± 0.71 | 1.75 |" in md
    assert "| 1/2 |" in md
    assert "| opc | centralized | global_model | 16.00 ± 1.41 | 15.50 ± 0.71 | 0.50 |" in md
