"""No silent wrong result, no lost run: requests at several rounds, thread counts, locks, resume, damaged state."""

import json

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

import fed_opc.client_app as client_app
import strategies.run.driver as run_driver
import strategies.run.evaluate as run_evaluate
import strategies.training as training_mod
from fed_opc.checkpoint import CheckpointError
from fed_opc.config import parse_scenario
from strategies.cli import simulate_main
from strategies.run import RunDirError, RunLock, simulate
from tests.helpers import tiny


def two_round_requests(methods, **over):
    raw = tiny(**{"federation.rounds": 4, "data.num_clients": 5, "federation.clients_per_round": 3} | over)
    raw["requests"] = [
        {"id": "first", "client": 1, "scope": "client", "round": 2},
        {"id": "second", "client": 2, "scope": "client", "round": 3},
    ]
    raw["unlearning"] = {"methods": methods}
    return raw


@pytest.fixture
def train_calls(monkeypatch):
    calls = []
    real = client_app.handle_train

    def spy(sc, msg, context):
        cfg = msg.content["config"]
        calls.append(
            (int(context.node_config["partition-id"]), str(cfg["stage"]), tuple(sorted(cfg.get("exclude", []))))
        )
        return real(sc, msg, context)

    monkeypatch.setattr(client_app, "handle_train", spy)
    return calls


def test_requests_at_two_rounds_never_share_a_stage_checkpoint(tmp_path, train_calls):
    raw = two_round_requests(["fed_retrain", "fed_finetune", "fed_opc"])
    raw["unlearning"]["fed_finetune"] = {"rounds": 1}
    raw["unlearning"]["fed_opc"] = {"max_rounds": 1, "recovery_rounds": 1}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "resuming" not in log  # a fresh run resumes nothing
    # fed_retrain: 2 rounds from scratch for "first", 1 round on to round 3, 3 rounds from scratch for "second" (the
    # rounds trained when it fires), 1 round on to the last round
    assert r.results["methods"]["fed_retrain"]["cost"]["rounds"] == 2 + 1 + 3 + 1
    second_retrain = [c for c in train_calls if c[1] == "fed_retrain/retrain" and c[2] == ("first", "second")]
    assert len(second_retrain) == 3 * 3  # really trained: 3 rounds x 3 clients, without either requester
    assert {pid for pid, _, _ in second_retrain}.isdisjoint({1, 2})
    # fed_finetune: 1 round per request + the continuation rounds (3 - 2 after the first, 4 - 3 after the second)
    assert r.results["methods"]["fed_finetune"]["cost"]["rounds"] == 1 + 1 + 1 + 1
    assert [q["status"] for q in r.results["requests"]] == ["done", "done"]


def test_every_stage_runs_with_the_scenario_thread_count(tmp_path, monkeypatch):
    seen: dict[str, int] = {}
    real_centralized = run_evaluate.run_centralized
    real_train = client_app.handle_train

    def centralized(*a, **kw):
        seen["centralized"] = torch.get_num_threads()
        return real_centralized(*a, **kw)

    def train(sc, msg, context):
        seen["client"] = torch.get_num_threads()
        return real_train(sc, msg, context)

    real_evaluate = run_evaluate.evaluate_methods

    def evaluate(*a, **kw):  # numpy and scikit-learn work: the BLAS pools' thread count
        seen["evaluation_blas"] = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(run_evaluate, "run_centralized", centralized)
    monkeypatch.setattr(client_app, "handle_train", train)
    monkeypatch.setattr(run_evaluate, "evaluate_methods", evaluate)
    raw = tiny(**{"federation.server_threads": 2, "federation.client_resources.num_cpus": 1})
    raw["requests"] = [{"client": 1, "scope": "client", "round": 3}]
    raw["unlearning"] = {"methods": ["finetune"]}
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # what an earlier job in this process left behind must not matter
    try:
        with threadpool_limits(limits=3, user_api="blas"):
            a = simulate(parse_scenario(raw), tmp_path / "a", use_cache=False, report=False)
            assert torch.get_num_threads() == 3  # restored after the run
        torch.set_num_threads(1)
        with threadpool_limits(limits=1, user_api="blas"):
            b = simulate(parse_scenario(raw), tmp_path / "b", use_cache=False, report=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    # the in-process clients ran first (1 thread each), yet the centralized stage ran on the scenario's 2, and so did
    # the evaluation's BLAS work
    assert seen == {"centralized": 2, "client": 1, "evaluation_blas": 2}
    strip = lambda r: {k: v for k, v in r.results["methods"]["finetune"]["metrics"].items() if k != "RTE_s"}  # noqa: E731
    assert strip(a) == strip(b)


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path):
    sc = parse_scenario(tiny())
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        with pytest.raises(RunDirError, match="another run is writing to it"):
            simulate(sc, out, use_cache=False)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_finished_run_is_refused_without_resume_or_overwrite(tmp_path, monkeypatch):
    sc = parse_scenario(tiny())
    out = tmp_path / "run"
    simulate(sc, out, use_cache=False)
    with pytest.raises(RunDirError, match="continue it with --resume or replace it with --overwrite"):
        simulate(sc, out, use_cache=False)

    def die(*a, **kw):
        raise KeyboardInterrupt

    # --overwrite killed mid-run: the old results.json is gone before the new scenario.yaml is written
    monkeypatch.setattr(run_driver, "_run", die)
    with pytest.raises(KeyboardInterrupt):
        simulate(sc, out, use_cache=False, overwrite=True)
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
    assert (out / "scenario.yaml").is_file()


def test_resume_may_change_client_resources(tmp_path, monkeypatch):
    raw = tiny(**{"federation.rounds": 4})
    out = tmp_path / "run"
    real_save = training_mod.save_checkpoint

    def save_then_die(path, obj):
        real_save(path, obj)
        if obj["round"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        simulate(parse_scenario(raw), out, use_cache=True, report=False)
    monkeypatch.setattr(training_mod, "save_checkpoint", real_save)
    yaml_before = (out / "scenario.yaml").read_text()
    raw["federation"]["client_resources"] = {"num_cpus": 2}
    r = simulate(parse_scenario(raw), out, use_cache=True, resume=True, report=False)
    assert len(r.results["pretrain"]["rounds"]) == 4
    log = (out / "log.txt").read_text()
    assert "resuming after round 2" in log and "not stored in the cache" in log
    assert "num_cpus: 2" in (out / "scenario.yaml").read_text() and "num_cpus: 1.0" in yaml_before


def test_unwritable_cache_is_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "cache_is_a_file"
    blocker.write_text("")
    monkeypatch.setenv("FED_OPC_CACHE_DIR", str(blocker))
    r = simulate(parse_scenario(tiny()), tmp_path / "run", use_cache=True, report=False)
    assert r.results["pretrain"]["cached"] is False
    assert "cannot write the pretraining cache" in (tmp_path / "run" / "log.txt").read_text()


def test_damaged_attack_block_and_ledger(tmp_path, capsys):
    raw = tiny()
    raw["requests"] = [{"client": 1, "scope": "client", "round": 3}]
    raw["unlearning"] = {"methods": ["finetune"]}
    raw["attacks"] = {"recovery": ["fm"]}
    sc = parse_scenario(raw)
    out = tmp_path / "run"
    first = simulate(sc, out, use_cache=False)
    # the stage breakdown: in results.json and in the log's last line
    assert set(first.results["timing"]) == {"pretraining", "centralized_methods", "attacks", "attack_tasks", "report"}
    assert list(first.results["timing"]["attack_tasks"]) == ["finetune"]
    assert json.loads((out / "results.json").read_text())["timing"] == first.results["timing"]
    assert "; pretraining " in (out / "log.txt").read_text().splitlines()[-1]
    (out / "checkpoints" / "attacks.finetune.json").write_text("{not json")
    again = simulate(sc, out, use_cache=False, resume=True, report=False)
    assert again.results["methods"]["finetune"]["attacks"] == first.results["methods"]["finetune"]["attacks"]
    assert "attacks.finetune.json: damaged (JSONDecodeError); attacking again" in (out / "log.txt").read_text()
    (out / "checkpoints" / "ledger.json").write_text("[]")
    with pytest.raises(CheckpointError, match="corrupted ledger"):
        simulate(sc, out, use_cache=False, resume=True, report=False)


def test_methods_without_a_request_say_so(tmp_path):
    raw = tiny()
    raw["unlearning"] = {"methods": ["fed_opc", "opc"]}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    assert r.results["methods"] == {}
    assert r.results["warnings"] == ["the scenario has no deletion request: fed_opc, opc had nothing to serve"]


def test_seeds_run_interrupted_in_the_first_seed_resumes_every_seed(tmp_path, monkeypatch):
    import yaml

    raw = tiny(**{"federation.rounds": 2})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    out = tmp_path / "seeds"
    real = run_driver._run

    def die_in_seed0(sc, *a, **kw):
        if sc.seed == 0:
            raise KeyboardInterrupt
        return real(sc, *a, **kw)

    monkeypatch.setattr(run_driver, "_run", die_in_seed0)
    args = [str(p), "--out", str(out), "--seeds", "0", "1", "--no-progress", "--no-cache"]
    assert simulate_main(args) == 130
    monkeypatch.setattr(run_driver, "_run", real)
    assert simulate_main([*args, "--resume"]) == 0
    assert (out / "seed_0" / "results.json").is_file() and (out / "seed_1" / "results.json").is_file()
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0, 1]


def test_out_under_a_file_is_refused(tmp_path):
    sc = parse_scenario(tiny())
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        simulate(sc, f / "run", use_cache=False, report=False)


def test_sigterm_ends_the_run_like_ctrl_c_with_a_resume_hint(tmp_path, monkeypatch, capsys):
    import os
    import signal

    import yaml

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny()))
    real = run_driver._run

    def terminated_mid_run(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the CLI's handler in this (main) thread
        return real(*a, **kw)

    monkeypatch.setattr(run_driver, "_run", terminated_mid_run)
    before = signal.getsignal(signal.SIGTERM)
    assert simulate_main([str(p), "--out", str(tmp_path / "o"), "--no-progress", "--no-cache"]) == 143
    assert capsys.readouterr().err.strip() == "error: terminated; continue with --resume"
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's handler is removed after the run


def test_sigterm_under_ray_driver_handler_is_read_as_termination(tmp_path, monkeypatch, capsys):
    # ray.init replaces the CLI's SIGTERM handler in the driver with sys.exit(SIGTERM); that exit is a termination too
    import signal

    import yaml

    import strategies.run

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny()))

    def ray_handler_fired(*a, **kw):
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(strategies.run, "simulate", ray_handler_fired)
    assert simulate_main([str(p), "--out", str(tmp_path / "o"), "--no-progress"]) == 143
    assert capsys.readouterr().err.strip() == "error: terminated; continue with --resume"


def test_inversion_runs_only_on_the_listed_methods(tmp_path):
    raw = tiny()
    raw["requests"] = [{"client": 1, "scope": "client", "round": 3}]
    raw["unlearning"] = {"methods": ["finetune", "retrain"]}
    raw["attacks"] = {"inversion": {"targets": ["global_model"], "images": 1, "iterations": 2, "restarts": 1,
                                    "methods": ["retrain"]}}  # fmt: skip
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    assert "inversion" in r.results["methods"]["retrain"]["attacks"]
    assert "attacks" not in r.results["methods"]["finetune"]
    raw["attacks"]["inversion"]["methods"] = ["opc"]
    with pytest.raises(Exception, match=r"attacks.inversion.methods\[0\]: opc is not in unlearning.methods"):
        parse_scenario(raw)
