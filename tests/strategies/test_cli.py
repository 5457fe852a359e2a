"""``fed-opc COMMAND ...``: one entry point for simulate, compare, summary and report (strategies.cli.main)."""

import json

from strategies.cli import COMMANDS, main
from tests.strategies.reporting.test_compare import seed


def test_usage_lists_every_command(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "usage: fed-opc {simulate,compare,summary,report} ..."
    assert [line.split()[0] for line in err[1:]] == ["simulate", "compare", "summary", "report"] == list(COMMANDS)
    assert main(["--help"]) == 0 and "usage: fed-opc" in capsys.readouterr().out
    assert main(["train"]) == 2


def test_summary_compare_and_report_through_one_entry_point(tmp_path, capsys):
    multi = tmp_path / "multi"
    for s, ua in ((0, 0.2), (1, 0.4)):
        (multi / f"seed_{s}").mkdir(parents=True)
        (multi / f"seed_{s}" / "results.json").write_text(json.dumps(seed(s, ua)))
    assert main(["summary", str(multi)]) == 0
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["n_seeds"] == 2
    capsys.readouterr()

    assert main(["compare", str(multi / "seed_0"), str(multi / "seed_1")]) == 0
    out = capsys.readouterr().out
    assert "seed_0" in out and "seed_1" in out and "20.0" in out and "40.0" in out  # UA of each, in percent

    one = tmp_path / "one"
    one.mkdir()
    (one / "results.json").write_text(json.dumps({}))
    assert main(["report", str(one)]) == 0
    assert sorted(p.name for p in one.iterdir()) == ["metrics.csv", "plots", "report.html", "report.md", "results.json"]
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'absent' / 'results.json'}: no such file"
