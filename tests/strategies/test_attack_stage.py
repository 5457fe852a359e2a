"""The attack stage runs its tasks side by side: the same numbers with one worker or two, and a failed task loses no
finished block."""

from __future__ import annotations

from pathlib import Path

import pytest

import strategies.attack_run as attack_run
from fed_opc.config import parse_scenario
from strategies.run import simulate
from tests.helpers import tiny


def scenario(workers: int):
    raw = tiny()
    raw["requests"] = [{"client": 1, "scope": "client", "round": 3}]
    raw["unlearning"] = {"methods": ["finetune", "retrain"], "retrain": {"epochs": 1}}
    raw["attacks"] = {
        "recovery": ["fm", "hr"],
        "inversion": {"targets": ["global_model"], "images": 2, "iterations": 20, "restarts": 2},
        "workers": workers,
    }
    return parse_scenario(raw)


def without_timing(d):
    if isinstance(d, dict):
        return {k: without_timing(v) for k, v in d.items() if k not in {"timing", "wall_s", "RTE_s"}}
    if isinstance(d, list):
        return [without_timing(v) for v in d]
    return d


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    return simulate(scenario(1), out, use_cache=False, report=False).results | {"dir": str(out)}


def test_two_workers_give_the_numbers_of_one(one_worker, tmp_path):
    two = simulate(scenario(2), tmp_path / "run", use_cache=False, report=False).results
    assert without_timing(two) | {"dir": None} == without_timing(one_worker) | {"dir": None}
    # every method attacked, the calibration rows present, and each task timed once, in task order
    assert set(two["methods"]["finetune"]["attacks"]) == {"recovery", "inversion"}
    assert "original_global_model" in two["inversion_reference"]
    assert list(two["timing"]["attack_tasks"]) == ["finetune", "retrain", "reference"]
    assert isinstance(two["timing"]["attacks"], float)


def test_a_failed_task_keeps_the_finished_blocks_and_resume_completes_them(one_worker, tmp_path, monkeypatch):
    real = attack_run.attack_method

    def failing(sc, sd, method, *args, **kw):
        if method == "retrain":
            raise RuntimeError("attack failed")
        return real(sc, sd, method, *args, **kw)

    monkeypatch.setattr(attack_run, "attack_method", failing)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="attack failed"):
        simulate(scenario(2), out, use_cache=False, report=False)
    ck = out / "checkpoints"
    # finetune ran beside the failing task and finished: its block is kept; retrain's never existed
    done = (ck / "attacks.finetune.json").read_text()
    assert done == (Path(one_worker["dir"]) / "checkpoints" / "attacks.finetune.json").read_text()
    assert not (ck / "attacks.retrain.json").exists()
    monkeypatch.setattr(attack_run, "attack_method", real)
    resumed = simulate(scenario(2), out, use_cache=False, resume=True, report=False).results
    assert without_timing(resumed) | {"dir": None} == without_timing(one_worker) | {"dir": None}
    assert "finetune" not in resumed["timing"]["attack_tasks"]  # read from its checkpoint, not attacked again
