"""The main job end to end through the CLI: the run directory contract, bad input, seeds, kill and resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from strategies.cli import simulate_main
from tests.helpers import tiny

REPO = Path(__file__).resolve().parents[2]
SIMULATE = [sys.executable, str(REPO / "scripts" / "simulate.py")]
PNG = b"\x89PNG\r\n\x1a\n"


def full_scenario(tmp_path: Path, name="e2e", **over) -> Path:
    raw = tiny(name=name, **{"federation.rounds": 3, "data.num_clients": 5, "federation.clients_per_round": 3} | over)
    raw["requests"] = [
        {"id": "gone", "client": 1, "scope": "client", "round": 3},
        {"id": "cls", "clients": "all", "scope": "class", "classes": [0, 1], "round": 3},
    ]
    raw["unlearning"] = {"methods": ["fed_opc", "fed_retrain", "opc", "retrain"], "retrain": {"epochs": 1}}
    raw["attacks"] = {
        "recovery": ["fm", "hr", "probe", "forget_probe", "prototype", "relearn"],
        "k_shot": 5,
        "relearn_steps": [1, 3],
        "inversion": {
            "targets": ["global_model", "unlearning_update", "model_difference"],
            "images": 1,
            "iterations": 20,
            "restarts": 1,
        },
    }
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def run_cli(*args, timeout=300, **kw):
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run([*SIMULATE, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, **kw)


def cli(capsys, *args) -> tuple[int, str]:
    """``simulate.py ARGS`` run in this process: (exit code, stderr). The subprocess form is kept for what needs a
    process of its own (the exit status the shell sees, SIGKILL).
    """
    capsys.readouterr()
    code = simulate_main([str(a) for a in args])
    return code, capsys.readouterr().err


def check_run_dir(out: Path) -> dict:
    for f in ("scenario.yaml", "results.json", "metrics.csv", "report.md", "report.html", "log.txt"):
        assert (out / f).is_file(), f
    assert (out / "checkpoints" / "ledger.json").is_file()
    r = json.loads((out / "results.json").read_text())
    assert r["schema_version"] == 2 and r["scenario"] == "e2e" and isinstance(r["seed"], int)
    assert [x["round"] for x in r["pretrain"]["rounds"]] == [1, 2, 3]
    assert {q["id"]: q["status"] for q in r["requests"]} == {"gone": "done", "cls": "done"}
    assert set(r["methods"]) == {"fed_opc", "fed_retrain", "opc", "retrain"}
    for name, m in r["methods"].items():
        assert m["setting"] == ("federated" if name.startswith("fed_") else "centralized")
        for key in (
            "UA",
            "RA",
            "TA",
            "MIA",
            "avg_gap",
            "forget_feature_norm",
            "retain_feature_norm",
            "dead_units_share",
        ):
            assert (
                0.0
                <= m["metrics"][key]
                <= (1.0 if key not in ("forget_feature_norm", "retain_feature_norm") else math.inf)
            ), (name, key)
        assert set(m["cost"]) >= {"rounds", "client_samples", "bytes_up", "bytes_down", "server_storage_bytes"}
        rec = m["attacks"]["recovery"]
        assert 0 <= rec["floor_UA"] <= 1 and 0 <= rec["fm"]["UA"] <= 1 and 0 <= rec["forget_probe"]["chance"] <= 1
        inv = m["attacks"]["inversion"]
        assert "global_model" in inv and "model_difference" in inv
        assert all(v["psnr"] > 0 and "baseline_psnr" in v for v in inv.values())
    assert "unlearning_update" in r["methods"]["fed_opc"]["attacks"]["inversion"]  # the requester sent an update
    assert (
        "unlearning_update" not in r["methods"]["opc"]["attacks"]["inversion"]
    )  # no requester in the centralized setting
    assert ": null" not in (out / "results.json").read_text()  # values that do not apply are absent, never null
    plots = sorted((out / "plots").glob("*.png"))
    assert len(plots) >= 5 and all(p.read_bytes()[:8] == PNG for p in plots)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= len(plots) - 1 and "http://" not in html and "https://" not in html
    return r


def test_cli_end_to_end_in_process(reference_run):
    """``python scripts/simulate.py SCENARIO --out DIR`` in a process of its own writes the whole run directory."""
    scen, _ = reference_run
    check_run_dir(scen.parent / "ref")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cli_end_to_end_on_ray(tmp_path):
    scen = full_scenario(tmp_path, **{"federation.backend": "ray"})
    res = run_cli(scen, "--out", tmp_path / "out", "--no-cache", "--no-progress", timeout=380)
    assert res.returncode == 0, res.stderr[-3000:]
    check_run_dir(tmp_path / "out")


def test_bad_scenario_exit_status_seen_by_the_shell(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nfederation: {lr: -1}\n")
    res = run_cli(p, "--out", tmp_path / "out", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {p}: federation.lr: expected float > 0, got -1"
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "content,expected",
    [
        ("name: x\nfederation: {lr: -1}\n", "federation.lr: expected float > 0, got -1"),
        (
            "name: x\nrequests: [{client: 99, scope: client, round: 1}]\n",
            "requests[0].client: expected a client id in 0..9, got 99",
        ),
        ("", "empty file"),
        ("{{{", "not valid YAML"),
    ],
)
def test_bad_scenario_one_line_exit_2_nothing_written(tmp_path, content, expected, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "bad.yaml"
    p.write_text(content)
    code, err = cli(capsys, p, "--out", tmp_path / "out")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0] and str(p) in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("make", ["missing", "directory", "unreadable"])
def test_bad_scenario_path(tmp_path, make, capsys):
    p = tmp_path / "s.yaml"
    if make == "directory":
        p.mkdir()
    elif make == "unreadable":
        p.write_bytes(b"\xff\xfe\x00 not utf-8 \xff")
    code, err = cli(capsys, p, "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(p) in err
    assert not (tmp_path / "out").exists()


def test_out_holding_another_scenario_is_refused(tmp_path, capsys):
    other = tmp_path / "out"
    other.mkdir()
    (other / "scenario.yaml").write_text("name: somebody_else\n")
    code, err = cli(capsys, full_scenario(tmp_path), "--out", other, "--no-progress")
    assert code == 2 and "holds a run of another scenario ('somebody_else')" in err
    assert sorted(p.name for p in other.iterdir()) == ["scenario.yaml"]


def test_data_root_with_a_corrupted_file(tmp_path, data_root, capsys):
    import shutil

    root = tmp_path / "data" / "cifar-10-batches-py"
    shutil.copytree(data_root / "cifar-10-batches-py", root)
    raw = bytearray((root / "test_batch").read_bytes())
    raw[1000] ^= 1
    (root / "test_batch").write_bytes(bytes(raw))
    scen = tmp_path / "c.yaml"
    scen.write_text(
        yaml.safe_dump(
            {
                "name": "c",
                "data": {"dataset": "cifar10", "root": str(tmp_path / "data"), "checksums": "cifar10-offline-rebuild"},
            }
        )
    )
    code, err = cli(capsys, scen, "--out", tmp_path / "out")
    assert code == 2 and "test_batch: md5" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_seeds_give_a_summary_with_mean_and_std(tmp_path, capsys):
    raw = tiny(name="e2e", **{"federation.rounds": 2})
    raw["requests"] = [{"client": 1, "scope": "samples", "fraction": 0.5, "round": 2}]
    raw["unlearning"] = {"methods": ["fed_opc", "opc"]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    code, err = cli(
        capsys, p, "--out", tmp_path / "out", "--seeds", "0", "1", "--no-cache", "--no-progress", "--no-report"
    )
    assert code == 0, err[-2000:]
    assert sorted(f.name for f in (tmp_path / "out" / "seed_0").iterdir()) == [
        ".lock",
        "checkpoints",
        "log.txt",
        "results.json",
        "scenario.yaml",
    ]  # --no-report: no metrics.csv, plots, report.md or report.html
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    text = json.dumps(s)
    assert '"mean"' in text and '"std"' in text and '"n": 2' in text
    assert (tmp_path / "out" / "seed_0" / "results.json").is_file() and (
        tmp_path / "out" / "seed_1" / "results.json"
    ).is_file()
    a = json.loads((tmp_path / "out" / "seed_0" / "results.json").read_text())
    b = json.loads((tmp_path / "out" / "seed_1" / "results.json").read_text())
    assert a["seed"] == 0 and b["seed"] == 1 and a["methods"]["opc"]["metrics"] != b["methods"]["opc"]["metrics"]


def _numbers(r: dict) -> dict:
    """results.json without wall times and cache facts, for comparing two runs."""
    drop = {"wall_s", "RTE_s", "cached", "cache_key", "timing"}

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(r)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    scen = full_scenario(tmp)
    ref = run_cli(scen, "--out", tmp / "ref", "--no-cache", "--no-progress")
    assert ref.returncode == 0, ref.stderr[-2000:]
    return scen, json.loads((tmp / "ref" / "results.json").read_text())


@pytest.mark.parametrize(
    "stage_file",
    [
        pytest.param("pretrain.ckpt", marks=pytest.mark.slow),  # killed during pretraining
        "method.fed_opc.ckpt",  # during the federated methods
        pytest.param("centralized.ckpt", marks=pytest.mark.slow),
        pytest.param("attacks.fed_opc.json", marks=pytest.mark.slow),  # during the attacks
    ],
)
def test_sigkill_and_resume_gives_the_same_results(tmp_path, stage_file, reference_run):
    scen, a = reference_run
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen(
        [*SIMULATE, str(scen), "--out", str(tmp_path / "run"), "--no-cache", "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = tmp_path / "run" / "checkpoints" / stage_file
    deadline = time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before the kill; the test did not interrupt anything"
    res = run_cli(scen, "--out", tmp_path / "run", "--no-cache", "--no-progress", "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    b = json.loads((tmp_path / "run" / "results.json").read_text())
    assert _numbers(a) == _numbers(b)
