"""The server's state arithmetic and stopping rules with hand-made numbers; every federated baseline served once."""

import numpy as np
import pytest
import torch

from fed_opc.config import parse_scenario
from fed_opc.data.forget import ForgetSplit
from strategies.federated_methods import _apply, _combine, _sub, _weighted_mean, stop_rule_for
from strategies.run import simulate
from tests.helpers import tiny


def test_weighted_mean_and_apply():
    deltas = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, -2.0])}]
    mean = _weighted_mean(deltas, [1.0, 3.0])
    assert torch.equal(mean["w"], torch.tensor([2.5, -1.0]))
    state = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(5)}
    out = _apply(state, mean)
    assert torch.equal(out["w"], torch.tensor([3.5, 0.0])) and out["n"] == 5 and out["n"].dtype == torch.int64
    assert torch.equal(_sub(out, state)["w"], mean["w"]) and "n" not in _sub(out, state)  # integer buffers skipped


def test_combine_adds_parameter_steps_and_averages_statistics():
    state = {"w": torch.tensor([1.0]), "bn.running_var": torch.tensor([1.0])}
    delta_r = {"w": torch.tensor([0.5]), "bn.running_var": torch.tensor([0.4])}
    delta_f = {"w": torch.tensor([-0.25]), "bn.running_var": torch.tensor([-0.2])}
    out = _combine(state, delta_r, delta_f, buffers={"bn.running_var"})
    assert torch.equal(out["w"], torch.tensor([1.25]))  # theta + delta_r + delta_f
    assert torch.allclose(out["bn.running_var"], torch.tensor([1.1]))  # theta + (delta_r + delta_f) / 2


def _split(scope, clients):
    e = np.zeros(0, np.int64)
    return ForgetSplit("r", scope, tuple(clients), (1,) if scope == "class" else (), e, {}, {}, e)


@pytest.mark.parametrize(
    ("scope", "clients", "expected"),
    [("class", (0, 1, 2), "norm_ratio"), ("class", (4,), "reference_acc"), ("client", (4,), "reference_acc"),
     ("samples", (4,), "reference_acc")],
)  # fmt: skip
def test_auto_stop_rule(scope, clients, expected):
    assert stop_rule_for(_split(scope, clients), "auto") == expected
    assert stop_rule_for(_split(scope, clients), "norm_ratio") == "norm_ratio"  # an explicit rule is kept


def test_every_federated_baseline_serves_a_request(tmp_path):
    raw = tiny(**{"federation.rounds": 3, "data.num_clients": 5, "federation.clients_per_round": 3})
    raw["requests"] = [{"id": "gone", "client": 1, "scope": "client", "round": 3}]
    methods = ["fed_eraser", "pga", "fed_ga", "fed_rl"]
    raw["unlearning"] = {"methods": methods, "fed_eraser": {"interval": 1}}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False)
    assert r.results["requests"][0]["status"] == "done"
    cost = {m: r.results["methods"][m]["cost"] for m in methods}
    # FedEraser stored every client update of the 3 pretraining rounds (interval 1): 3 rounds x 3 clients
    model_bytes = sum(t.numel() * t.element_size() for t in r.pretrained_state.values() if t.is_floating_point())
    assert cost["fed_eraser"]["server_storage_bytes"] == 3 * 3 * model_bytes
    assert r.results["methods"]["fed_eraser"]["diagnostics"] == {"calibrated_rounds": 3}
    # pga: 1 unlearning round + 2 recovery rounds; fed_ga / fed_rl: 2 unlearning rounds + 2 recovery rounds
    assert cost["pga"]["rounds"] == 3
    assert cost["fed_ga"]["rounds"] == 4 and cost["fed_rl"]["rounds"] == 4  # neither reached its stop_acc early
    for m in ("pga", "fed_ga", "fed_rl"):  # only the requester ran unlearning steps
        rounds = r.results["methods"][m]["diagnostics"]["unlearning_rounds"]
        assert all(x["requesters"] in ([1], []) for x in rounds)


def test_every_federated_method_config_has_a_server_side_and_no_server_side_lacks_a_config():
    from fed_opc.unlearning.federated import CONFIGS
    from strategies.federated_methods import SERVE

    assert sorted(SERVE) == sorted(CONFIGS)
