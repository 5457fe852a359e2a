"""Federated OPC as FedAvg over local OPC objectives: weights, server step, the client's share, end to end."""

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

import fed_opc.client_app as client_app
from fed_opc.client_app import make_client_app
from fed_opc.config import parse_scenario
from fed_opc.data.scenario_data import prepare
from fed_opc.flower import arrays_from_state, ensure_task_identity, message, state_from_arrays
from fed_opc.models import new_model
from strategies.federated.opc_fedavg import received_reading, round_weights, server_step
from strategies.run import simulate
from tests.helpers import tiny


def test_round_weights_keep_the_global_balance():
    # two retain clients (30 and 10 samples), one requester with 20 to keep and 5 to forget, one with 0 and 15
    n_retain = {0: 30, 1: 10, 2: 20, 3: 0}
    n_forget = {0: 0, 1: 0, 2: 5, 3: 15}
    w = round_weights(n_retain, n_forget, lambda_=2.0)
    # u = (0.5, 1/6, 1/3, 0), v = (0, 0, 0.25, 0.75); w = (u + v) / 2; a = u / w; b = v / w
    assert w[0] == (0.25, 2.0, 0.0) and w[1] == (1 / 12, 2.0, 0.0)
    assert np.allclose(w[2], (7 / 24, (1 / 3) / (7 / 24), 0.25 / (7 / 24)))
    assert w[3] == (0.375, 0.0, 2.0)  # a requester with nothing to keep contributes only the contraction
    assert np.isclose(sum(x[0] for x in w.values()), 1.0)
    # sum_k w_k a_k = 1 (the CE term) and sum_k w_k b_k = 1 (the contraction term)
    assert np.isclose(sum(x[0] * x[1] for x in w.values()), 1.0)
    assert np.isclose(sum(x[0] * x[2] for x in w.values()), 1.0)
    # lambda 0: FedAvg over the retained data (weights = shares of retained samples, plain CE)
    assert round_weights(n_retain, n_forget, lambda_=0.0) == {0: (0.5, 1.0, 0.0), 1: (1 / 6, 1.0, 0.0),
                                                               2: (1 / 3, 1.0, 0.0), 3: (0.0, 1.0, 0.0)}  # fmt: skip


def test_server_step_with_momentum():
    state = {"w": torch.tensor([1.0, 1.0])}
    deltas = [{"w": torch.tensor([2.0, 0.0])}, {"w": torch.tensor([0.0, 4.0])}]
    new, m = server_step(state, deltas, [3.0, 1.0], None, lr=1.0, beta=0.0)
    assert torch.equal(m["w"], torch.tensor([1.5, 1.0])) and torch.equal(new["w"], torch.tensor([2.5, 2.0]))
    new2, m2 = server_step(new, deltas, [1.0, 1.0], m, lr=0.5, beta=0.5)
    # m = 0.5 * (1.5, 1) + (1, 2) = (1.75, 2.5); theta = (2.5, 2) + 0.5 m
    assert torch.equal(m2["w"], torch.tensor([1.75, 2.5])) and torch.equal(new2["w"], torch.tensor([3.375, 3.25]))


def test_the_received_reading_weighs_by_samples_and_is_none_where_undefined():
    n_forget, n_retain = {0: 30, 1: 10}, {0: 10, 1: 30, 2: 60}
    req = [(0, {"received_forget_norm": 2.0, "received_forget_acc": 0.5}),
           (1, {"received_forget_norm": 6.0, "received_forget_acc": 0.1})]  # fmt: skip
    ret = [(0, {"received_retain_norm": 4.0}), (1, {"received_retain_norm": 8.0}), (2, {"received_retain_norm": 2.0})]
    # forget norm (30 x 2 + 10 x 6) / 40 = 3; forget acc (15 + 1) / 40 = 0.4; retain norm (40 + 240 + 120) / 100 = 4
    assert received_reading(req, ret, n_forget, n_retain) == (0.75, 0.4)
    # a collapsed model: every retained feature is 0, so the ratio is undefined (a results file cannot hold nan)
    dead = [(p, {"received_retain_norm": 0.0}) for p, _ in ret]
    assert received_reading(req, dead, n_forget, n_retain) == (None, 0.4)
    assert received_reading([], ret, n_forget, n_retain) == (None, None)  # no requester replied


def _train_reply(sc, pid, config, state):
    ensure_task_identity()
    app = make_client_app(sc)
    ctx = Context(
        run_id=1, node_id=7, node_config={"partition-id": pid, "num-partitions": 4}, state=RecordDict(), run_config={}
    )
    msg = message(RecordDict({"arrays": arrays_from_state(state), "config": ConfigRecord(config)}), 7, "train")
    msg.metadata.__dict__["_message_id"] = "m"
    return app(msg, ctx).content


def test_with_lambda_zero_a_client_trains_exactly_as_fedavg():
    raw = tiny()
    raw["requests"] = [{"id": "c", "clients": "all", "scope": "class", "classes": [1], "round": 3}]
    sc = parse_scenario(raw)
    state = new_model(sc, prepare(sc)).state_dict()
    base = {"server-round": 4, "stage": "s", "exclude": ["c"], "world": "w", "lr": 0.05, "epochs": 1.0}
    plain = _train_reply(sc, 2, base, state)
    opc0 = _train_reply(sc, 2, base | {"opc.serving": ["c"], "opc.lambda": 0.0, "opc.ce_weight": 1.0}, state)
    a, b = state_from_arrays(plain["arrays"]), state_from_arrays(opc0["arrays"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    opc = _train_reply(sc, 2, base | {"opc.serving": ["c"], "opc.lambda": 1.0}, state)
    c = state_from_arrays(opc["arrays"])
    assert not torch.equal(a["head.weight"], c["head.weight"])  # the contraction term changes the update
    assert int(opc["metrics"]["n_forget"]) == len(prepare(sc).request("c").client_forget[2])


def test_a_requester_with_nothing_to_keep_contributes_only_the_contraction(monkeypatch):
    raw = tiny()
    raw["requests"] = [{"id": "gone", "client": 1, "scope": "client", "round": 3}]
    sc = parse_scenario(raw)
    state = new_model(sc, prepare(sc)).state_dict()
    seen = {}
    real = client_app.opc_loss

    def spy(model, batch, **kw):
        seen.setdefault("keys", set()).update(batch)
        seen["ce_weight"] = kw["ce_weight"]
        return real(model, batch, **kw)

    monkeypatch.setattr(client_app, "opc_loss", spy)
    config = {"server-round": 4, "stage": "s", "exclude": ["gone"], "world": "w", "lr": 0.05, "epochs": 1.0}
    config |= {"opc.serving": ["gone"], "opc.lambda": 2.0, "opc.ce_weight": 0.0, "opc.measure": True}
    out = _train_reply(sc, 1, config, state)
    assert seen["keys"] == {"x_forget", "y_forget"} and seen["ce_weight"] == 0.0
    m = out["metrics"]
    assert int(m["num-examples"]) == 0 and int(m["n_forget"]) == 80  # 320 samples / 4 clients, all to forget
    assert m["received_retain_norm"] == 0.0 and m["received_forget_norm"] > 0


def test_fedavg_protocol_end_to_end(tmp_path):
    raw = tiny(**{"federation.rounds": 3, "data.num_clients": 5, "federation.clients_per_round": 3})
    raw["requests"] = [{"id": "gone", "client": 1, "scope": "client", "round": 3}]
    fed_opc = {"protocol": "fedavg", "max_rounds": 3, "lambda": 1.0, "lr": 0.004}
    raw["unlearning"] = {"methods": ["fed_opc"], "fed_opc": fed_opc}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    diag = r.results["methods"]["fed_opc"]["diagnostics"]
    assert diag["protocol"] == "fedavg"
    assert r.observed["fed_opc"]["gone"]["lr"] == 0.004  # the method's lr, not the federation's
    rounds = diag["unlearning_rounds"]
    assert [x["round"] for x in rounds] == list(range(4, 4 + len(rounds)))
    assert all(x["requesters"] == [1] and 1 not in x["retain_clients"] for x in rounds)
    assert r.results["methods"]["fed_opc"]["cost"]["rounds"] == len(rounds)


def test_protocol_defaults_fill_only_what_the_scenario_leaves_out():
    from fed_opc.schema import to_dict
    from fed_opc.unlearning.federated import FedOPCConfig

    raw = tiny()
    raw["requests"] = [{"id": "c", "clients": "all", "scope": "class", "classes": [1], "round": 3}]
    raw["unlearning"] = {"methods": ["fed_opc"]}
    cfg = parse_scenario(raw).unlearning.params["fed_opc"]
    assert (cfg.protocol, cfg.lambda_, cfg.stop_ratio, cfg.max_rounds, cfg.local_epochs) == (
        "fedavg",
        0.1,
        0.03,
        8,
        None,
    )
    # fedavg's local epochs follow the stopping rule of the requests served
    assert (cfg.local_epochs_for("norm_ratio"), cfg.local_epochs_for("reference_acc")) == (1.0, 0.1)
    assert FedOPCConfig(**{k.replace("lambda", "lambda_"): v for k, v in to_dict(cfg).items()}) == cfg
    assert (cfg.lr, cfg.momentum, cfg.batch_size, cfg.constraint, cfg.epsilon, cfg.requester_retain) == (None,) * 6
    raw["unlearning"]["fed_opc"] = {"protocol": "two_phase", "lambda": 2, "stop_ratio": None}
    cfg = parse_scenario(raw).unlearning.params["fed_opc"]
    assert (cfg.lambda_, cfg.local_epochs, cfg.stop_ratio, cfg.max_rounds) == (2.0, 0.25, 0.1, 5)
    assert (cfg.lr, cfg.momentum, cfg.batch_size, cfg.constraint, cfg.epsilon, cfg.requester_retain) == (
        0.01,
        0.0,
        32,
        "project",
        1.0,
        True,
    )
    assert cfg.local_epochs_for("reference_acc") == 0.25
    # what a run records (scenario.yaml) holds the values used, and reads back to the same config
    assert FedOPCConfig(**{k.replace("lambda", "lambda_"): v for k, v in to_dict(cfg).items()}) == cfg


@pytest.mark.parametrize("key, value", [("momentum", 0.5), ("batch_size", 8), ("constraint", "ball"), ("epsilon", 2.0),
                                        ("requester_retain", False)])  # fmt: skip
def test_a_two_phase_setting_under_fedavg_is_an_error_not_ignored(key, value):
    from fed_opc.config import ConfigError

    raw = tiny()
    raw["requests"] = [{"id": "c", "clients": "all", "scope": "class", "classes": [1], "round": 3}]
    raw["unlearning"] = {"methods": ["fed_opc"], "fed_opc": {key: value}}
    with pytest.raises(ConfigError, match=rf"^unlearning\.fed_opc\.{key}: a two_phase setting; protocol fedavg"):
        parse_scenario(raw)


def test_frozen_batch_norm_keeps_the_received_running_statistics():
    raw = tiny(**{"model.norm": "batch"})
    raw["requests"] = [{"id": "c", "clients": "all", "scope": "class", "classes": [1], "round": 3}]
    sc = parse_scenario(raw)
    state = new_model(sc, prepare(sc)).state_dict()
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert stats
    base = {"server-round": 4, "stage": "s", "exclude": ["c"], "world": "w", "lr": 0.05, "epochs": 1.0}
    base |= {"opc.serving": ["c"], "opc.lambda": 1.0}
    frozen = state_from_arrays(_train_reply(sc, 2, base | {"opc.batch_norm": "frozen"}, state)["arrays"])
    batch = state_from_arrays(_train_reply(sc, 2, base, state)["arrays"])
    assert all(torch.equal(frozen[k], state[k]) for k in stats)  # eval-mode batch norm: statistics untouched
    assert not all(torch.equal(batch[k], state[k]) for k in stats)  # train mode: this client's batches move them
    assert not torch.equal(frozen["head.weight"], state["head.weight"])  # the parameters still train
