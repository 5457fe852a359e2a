"""Injected client faults: the round goes on without the client, failures are counted, requests are retried."""

import pytest

from fed_opc.config import ConfigError, parse_scenario
from strategies.run import simulate
from tests.helpers import tiny


def test_fault_config_accepts_a_mapping_and_checks_the_client():
    raw = tiny()
    raw["faults"] = {"crash": {"client": 1, "round": 2}}
    assert parse_scenario(raw).faults.crash[0].client == 1
    raw["faults"] = {"crash": [{"client": 9, "round": 2}]}
    with pytest.raises(ConfigError, match=r"faults.crash\[0\].client: expected a client id in 0..3, got 9"):
        parse_scenario(raw)


def test_a_crashing_client_is_counted_and_the_round_completes(tmp_path):
    raw = tiny(**{"federation.rounds": 3, "federation.clients_per_round": 4})
    raw["faults"] = {"crash": {"client": 2, "round": 2}}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    pre = r.results["pretrain"]
    assert pre["cost"]["failures"] == 1
    assert [x["round"] for x in pre["rounds"]] == [1, 2, 3] and all("test_acc" in x for x in pre["rounds"])
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "round 2: client 2 failed" in log and "injected crash of client 2 in round 2" in log


def test_a_requester_that_fails_is_retried_next_round(tmp_path):
    raw = tiny(**{"federation.rounds": 3, "data.num_clients": 5, "federation.clients_per_round": 3})
    raw["requests"] = [{"client": 1, "scope": "client", "round": 3}]
    raw["unlearning"] = {
        "methods": ["fed_opc"],
        "fed_opc": {"max_rounds": 1, "stop_rule": "norm_ratio", "protocol": "two_phase"},
    }
    raw["faults"] = {"crash": {"client": 1, "round": 4, "world": "fed_opc"}}  # its first unlearning round
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    rounds = r.results["methods"]["fed_opc"]["diagnostics"]["unlearning_rounds"]
    assert [(x["round"], x["served"]) for x in rounds] == [(4, False), (5, True)]
    assert r.results["requests"][0]["status"] == "done"
    assert r.results["methods"]["fed_opc"]["cost"]["failures"] == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_ray_actor_that_dies_does_not_stop_the_run(tmp_path):
    raw = tiny(**{"data.num_clients": 3, "federation.rounds": 3, "federation.clients_per_round": 3})
    raw["federation"] |= {"backend": "ray", "round_timeout_s": 120}
    raw["faults"] = {"die": {"client": 1, "round": 2}}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    assert r.results["pretrain"]["cost"]["failures"] >= 1
    assert [x["round"] for x in r.results["pretrain"]["rounds"]] == [1, 2, 3]
