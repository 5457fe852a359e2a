"""Scenarios that load but do not fit their data are refused by ``prepare`` (before a run writes anything) with one line
naming the field; an unreadable data root is one line too.
"""

import copy
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fed_opc.config import ConfigError, parse_scenario
from fed_opc.data import DataError
from fed_opc.data.scenario_data import ScenarioDataError, attacker_split, prepare

REPO = Path(__file__).resolve().parents[2]

# 4 clients, one class each (shards of a label-sorted, balanced set of 40): client 0 holds class 3, client 1 class 2,
# client 2 class 1, client 3 class 0, 10 samples each (test_the_partitions_are_as_the_cases_assume checks this)
BASE = {
    "name": "t",
    "data": {
        "dataset": "synthetic",
        "num_clients": 4,
        "partition": {"kind": "shards", "classes_per_client": 1},
        "synthetic": {"num_train": 40, "num_test": 10, "num_classes": 4, "image_size": 8},
    },
    "federation": {"rounds": 3, "clients_per_round": 2, "backend": "inprocess"},
    "requests": [{"client": 0, "scope": "client", "round": 2}],
    "unlearning": {"methods": ["fed_opc", "opc"]},
    "attacks": {"recovery": ["fm", "forget_probe"]},
}


def scenario(requests=None, data=None, attacks=None):
    raw = copy.deepcopy(BASE)
    if requests is not None:
        raw["requests"] = requests
    raw["data"].update(data or {})
    if attacks is not None:
        raw["attacks"] = attacks
    return parse_scenario(raw, path="x.yaml")


def refused(sc) -> str:
    with pytest.raises(ScenarioDataError) as e:
        prepare(sc)
    assert isinstance(e.value, ConfigError) and isinstance(e.value, DataError)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_the_partitions_are_as_the_cases_assume():
    sd = prepare(scenario())
    held = [np.unique(sd.data.train.labels[p]).tolist() for p in sd.partitions]
    assert held == [[3], [2], [1], [0]] and [len(p) for p in sd.partitions] == [10, 10, 10, 10]


def test_a_class_the_requester_does_not_hold():
    sc = scenario([{"client": 0, "scope": "class", "classes": [3, 1], "round": 2}])
    assert (
        refused(sc)
        == "requests[0].classes[1]: client 0 holds no sample of class 1 (its partition: 10 samples of class 3)"
    )


def test_a_class_no_client_holds():
    sc = scenario(
        [{"clients": "all", "scope": "class", "classes": [1], "round": 2}],
        data={"partition": {"kind": "iid"}, "max_samples": 4},
        attacks={},
    )
    assert (
        refused(sc)
        == "requests[0].classes[0]: no client holds a sample of class 1 (the training pool has classes 2, 3)"
    )


def test_a_count_above_the_clients_data():
    sc = scenario([{"client": 2, "scope": "samples", "count": 11, "round": 2}])
    assert refused(sc) == "requests[0].count: expected int <= 10 (client 2 holds 10 samples), got 11"
    prepare(scenario([{"client": 2, "scope": "samples", "count": 10, "round": 2}]))


def test_a_fraction_that_selects_nothing():
    sc = scenario([{"client": 2, "scope": "samples", "fraction": 0.05, "round": 2}])
    assert refused(sc) == (
        "requests[0].fraction: selects no sample of client 2's 10 (0.05 x 10 rounds to 0); "
        "expected a fraction > 0.05, or a count"
    )
    assert (
        prepare(scenario([{"client": 2, "scope": "samples", "fraction": 0.06, "round": 2}])).requests[0].n_forget == 1
    )


def test_a_request_that_forgets_nothing_new():
    sc = scenario(
        [
            {"client": 1, "scope": "samples", "count": 2, "round": 3},
            {"client": 1, "scope": "client", "round": 2},
        ]
    )
    # served in round order: the client's whole data goes at round 2, so the samples request at round 3 finds none
    assert refused(sc) == "requests[0]: forgets nothing new: all its 2 samples are forgotten before it, by requests[1]"


def test_requests_that_leave_nothing_to_retain():
    sc = scenario(
        [
            {"client": 0, "scope": "client", "round": 2},
            {"client": 1, "scope": "client", "round": 2},
            {"clients": "all", "scope": "class", "classes": [0, 1], "round": 3},
        ]
    )
    assert refused(sc) == (
        "requests[2]: with the requests served before it, all 40 training samples are forgotten: nothing is left to retain"
    )


def test_an_impossible_partition_names_its_field():
    sc = scenario(data={"num_clients": 50, "max_samples": None}, attacks={})
    assert refused(sc) == "data.partition: shards: 50 clients x 1 shards exceeds 40 samples"


def test_forget_probe_needs_every_forgotten_class_in_the_attackers_half():
    requests = [{"clients": "all", "scope": "class", "classes": [0, 1, 2], "round": 2}]
    sc = scenario(requests, data={"max_test_samples": 3})
    sd = prepare(scenario(requests, data={"max_test_samples": 3}, attacks={}))  # without the attack: fine
    _, pool = attacker_split(sc.seed, sd.test_idx)
    assert sorted(sd.data.test.labels[pool].tolist()) == [0, 2]  # the attacker's half of 3 held-out samples
    assert refused(sc) == (
        "data.max_test_samples: the attacker's half of the held-out data (2 samples) holds no sample of forgotten "
        "class(es) 1, which forget_probe needs; use more held-out samples"
    )
    prepare(scenario(requests, data={"max_test_samples": 10}))


def test_the_attacker_split_is_the_one_the_attacks_use():
    from strategies.attack_run import _split_test

    sc = scenario(data={"max_test_samples": 7})
    sd = prepare(sc)
    calib, pool, _ = _split_test(sc, sd)
    mine = attacker_split(sc.seed, sd.test_idx)
    assert np.array_equal(mine[0], calib) and np.array_equal(mine[1], pool) and len(calib) == 3


# ---------------------------------------------------------------------------------------------------------------------
# an unreadable data root; as root (who reads everything), the reads run in a forked child that drops to an
# unprivileged user


def _as_unprivileged(fn) -> list[str]:
    """The lines ``fn()`` returns, computed by this process, or when it runs as root by a forked child of user 65534."""
    if os.geteuid() != 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run, report through the pipe, never return into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, "\n".join(fn()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return text.splitlines()


def test_an_unreadable_data_root_is_one_line():
    from fed_opc.config import load_scenario
    from fed_opc.data import load_dataset

    mnist = Path(os.environ.get("FED_OPC_DATA_ROOT", "/nonexistent")) / "MNIST" / "raw"
    if not (mnist / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("no MNIST under $FED_OPC_DATA_ROOT")
    top = Path(tempfile.mkdtemp(prefix="fedopc_unreadable_"))
    try:
        top.chmod(0o755)
        (top / "closed" / "MNIST" / "raw").mkdir(parents=True)  # a root this user may not search
        files = top / "files" / "MNIST" / "raw"  # a root whose files this user may not read
        files.mkdir(parents=True)
        for f in mnist.glob("*.gz"):
            (files / f.name).write_bytes(b"")
            (files / f.name).chmod(0o000)
        for d in (top / "files", top / "files" / "MNIST", files):
            d.chmod(0o755)
        scenario_file = top / "s.yaml"
        scenario_file.write_text(f"name: t\ndata: {{dataset: mnist, root: {top / 'closed'}}}\n")
        scenario_file.chmod(0o644)
        load_scenario(scenario_file, check_environment=False)  # imports what the child needs while it still may
        (top / "closed").chmod(0o000)

        def attempt() -> list[str]:
            lines = []
            try:
                load_scenario(scenario_file)
            except ConfigError as e:
                lines.append(f"load: {e}")
            try:
                load_dataset("mnist", top / "files")
            except DataError as e:
                lines.append(f"data: {e}")
            return lines

        assert _as_unprivileged(attempt) == [
            f"load: {scenario_file}: data.root: {top / 'closed'}: cannot read (Permission denied)",
            f"data: {files / 'train-images-idx3-ubyte.gz'}: cannot read (Permission denied)",
        ]
    finally:
        (top / "closed").chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)
