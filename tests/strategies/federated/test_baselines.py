"""The baselines served end to end on the in-process grid: FedEraser (``eraser``), PGA, fed_ga and fed_rl
(``rounds``), with their exact round counts, server storage and PGA's radius."""

import pytest
import torch

from fed_opc.config import parse_scenario
from fed_opc.data.scenario_data import prepare
from fed_opc.models import new_model
from strategies.run import simulate
from tests.helpers import tiny


def test_every_federated_baseline_serves_a_request(tmp_path):
    raw = tiny(**{"federation.rounds": 3, "data.num_clients": 5, "federation.clients_per_round": 3})
    raw["requests"] = [{"id": "gone", "client": 1, "scope": "client", "round": 3}]
    methods = ["fed_eraser", "pga", "fed_ga", "fed_rl"]
    raw["unlearning"] = {"methods": methods, "fed_eraser": {"interval": 1}}
    sc = parse_scenario(raw)
    r = simulate(sc, tmp_path / "run", use_cache=False, report=False)
    assert r.results["requests"][0]["status"] == "done"
    cost = {m: r.results["methods"][m]["cost"] for m in methods}
    # FedEraser stored every client update of the 3 pretraining rounds (interval 1): 3 rounds x 3 clients
    model_bytes = sum(t.numel() * t.element_size() for t in r.pretrained_state.values() if t.is_floating_point())
    assert cost["fed_eraser"]["server_storage_bytes"] == 3 * 3 * model_bytes
    assert r.results["methods"]["fed_eraser"]["diagnostics"] == {"calibrated_rounds": 3}
    # one calibration round per stored round: each had 3 participants, at least 2 of them other than the requester
    assert cost["fed_eraser"]["rounds"] == 3
    # pga's ball: one third of the distance from the global model the request arrives at to the seeded initial model
    init = new_model(sc, prepare(sc)).state_dict()
    pre = r.pretrained_state
    dist = torch.sqrt(sum(((pre[k].float() - init[k].float()) ** 2).sum() for k in pre if pre[k].is_floating_point()))
    assert r.results["methods"]["pga"]["diagnostics"]["radius"] == pytest.approx(float(dist) / 3.0, rel=1e-6)
    # pga: 1 unlearning round + 2 recovery rounds; fed_ga / fed_rl: 2 unlearning rounds + 2 recovery rounds
    assert cost["pga"]["rounds"] == 3
    assert cost["fed_ga"]["rounds"] == 4 and cost["fed_rl"]["rounds"] == 4  # neither reached its stop_acc early
    for m in ("pga", "fed_ga", "fed_rl"):  # only the requester ran unlearning steps
        rounds = r.results["methods"][m]["diagnostics"]["unlearning_rounds"]
        assert all(x["requesters"] in ([1], []) for x in rounds)
