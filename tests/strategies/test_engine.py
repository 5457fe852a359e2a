"""The Flower apps on the in-process grid (the Ray engine: test_ray.py); cache; checkpoint resume."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

import strategies.training as training_mod
from fed_opc.client_app import make_client_app
from fed_opc.data.scenario_data import prepare
from fed_opc.flower import InProcessGrid, discover_nodes, ensure_task_identity, message
from fed_opc.models import new_model
from strategies.run import simulate
from tests.helpers import tiny_scenario


def _ctx(pid: int, n: int = 4) -> Context:
    return Context(
        run_id=1, node_id=99, node_config={"partition-id": pid, "num-partitions": n}, state=RecordDict(), run_config={}
    )


def _call(app, msg: Message, ctx: Context) -> Message:
    msg.metadata.__dict__["_message_id"] = "x"
    return app(msg, ctx)


def test_client_app_handlers_directly():
    sc = tiny_scenario()
    sd = prepare(sc)
    app = make_client_app(sc)
    ensure_task_identity()
    ctx = _ctx(2)
    who = _call(app, message(RecordDict(), 99, "query.whoami"), ctx)
    assert who.content["whoami"]["partition-id"] == 2
    arrays = ArrayRecord(new_model(sc, sd).state_dict())
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1, "lr": 0.05, "epochs": 1.0})})
    rep = _call(app, message(content, 99, "train"), ctx)
    m = rep.content["metrics"]
    assert m["num-examples"] == len(sd.partitions[2]) == 80 and m["samples"] == 80  # epochs: 1.0 in the message
    assert m["partition-id"] == 2  # every reply is stamped with its sender's partition, which the server checks
    assert set(rep.content["arrays"].keys()) == set(arrays.keys())
    ev = _call(app, message(RecordDict({"arrays": rep.content["arrays"]}), 99, "evaluate"), ctx)
    assert 0.0 <= ev.content["metrics"]["eval_acc"] <= 1.0


def test_excluded_request_is_dropped_and_remembered():
    sc = tiny_scenario(requests=[{"client": 1, "scope": "samples", "count": 10, "round": 3}])
    sd = prepare(sc)
    app = make_client_app(sc)
    ensure_task_identity()
    ctx = _ctx(1)
    arrays = ArrayRecord(new_model(sc, sd).state_dict())
    cfg = ConfigRecord({"server-round": 4, "exclude": ["r0"]})
    rep = _call(app, message(RecordDict({"arrays": arrays, "config": cfg}), 99, "train"), ctx)
    assert rep.content["metrics"]["num-examples"] == 70
    # the client keeps the served request in its small record, even if a later message omits it
    rep2 = _call(
        app, message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 5})}), 99, "train"), ctx
    )
    assert rep2.content["metrics"]["num-examples"] == 70


def test_in_process_grid_pretrains(tmp_path):
    sc = tiny_scenario(**{"federation.rounds": 4, "data.num_clients": 5, "federation.clients_per_round": 3})
    r = simulate(sc, tmp_path / "run", use_cache=False, report=False)
    rounds = r.results["pretrain"]["rounds"]
    assert [x["round"] for x in rounds] == [1, 2, 3, 4]
    assert all(len(x["clients"]) == 3 for x in rounds)
    assert rounds[-1]["test_acc"] > 0.5  # 4 balanced classes: chance is 0.25
    assert r.results["pretrain"]["cost"]["messages"] == 12
    assert (tmp_path / "run" / "log.txt").read_text().count("round") >= 4


def test_in_process_grid_deep_copies_and_uses_random_node_ids():
    sc = tiny_scenario()
    grid = InProcessGrid(make_client_app(sc), 4)
    ids = grid.get_node_ids()
    assert len(set(ids)) == 4 and not set(ids) & {0, 1, 2, 3}


def test_cache_hit_and_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("FED_OPC_CACHE_DIR", str(tmp_path / "cache"))
    first = simulate(tiny_scenario(), tmp_path / "a", report=False)
    assert first.results["pretrain"]["cached"] is False
    second = simulate(tiny_scenario(), tmp_path / "b", report=False)
    assert second.results["pretrain"]["cached"] is True
    assert second.results["pretrain"]["cache_key"] == first.results["pretrain"]["cache_key"]
    assert all(torch.equal(first.pretrained_state[k], second.pretrained_state[k]) for k in first.pretrained_state)
    changed = simulate(tiny_scenario(**{"federation.lr": 0.02}), tmp_path / "c", report=False)
    assert changed.results["pretrain"]["cached"] is False
    assert changed.results["pretrain"]["cache_key"] != first.results["pretrain"]["cache_key"]
    # how the run executes is not part of the key
    other_name = simulate(
        tiny_scenario(name="renamed", **{"federation.round_timeout_s": 99.0}), tmp_path / "d", report=False
    )
    assert other_name.results["pretrain"]["cached"] is True
    no_cache = simulate(tiny_scenario(), tmp_path / "e", use_cache=False, report=False)
    assert no_cache.results["pretrain"]["cached"] is False


def test_resume_after_a_crash_equals_uninterrupted(tmp_path, monkeypatch):
    sc = tiny_scenario(**{"federation.rounds": 4})
    full = simulate(sc, tmp_path / "full", use_cache=False, report=False)

    real_save = training_mod.save_checkpoint

    def save_then_die(path, obj):
        real_save(path, obj)
        if obj["round"] == 2:
            raise KeyboardInterrupt  # the driver dies right after checkpointing round 2

    monkeypatch.setattr(training_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        simulate(sc, tmp_path / "crashed", use_cache=False, report=False)
    monkeypatch.setattr(training_mod, "save_checkpoint", real_save)
    resumed = simulate(sc, tmp_path / "crashed", use_cache=False, resume=True, report=False)
    a, b = full.pretrained_state, resumed.pretrained_state
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rs: [{k: v for k, v in x.items() if k != "wall_s"} for x in rs]  # noqa: E731
    assert strip(full.results["pretrain"]["rounds"]) == strip(resumed.results["pretrain"]["rounds"])
    assert full.results["pretrain"]["cost"] == resumed.results["pretrain"]["cost"]
    assert "resuming after round 2" in (tmp_path / "crashed" / "log.txt").read_text()


def test_same_seed_same_numbers_other_seed_differs(tmp_path):
    a = simulate(tiny_scenario(), tmp_path / "a", use_cache=False, report=False)
    b = simulate(tiny_scenario(), tmp_path / "b", use_cache=False, report=False)
    c = simulate(tiny_scenario(seed=1), tmp_path / "c", use_cache=False, report=False)
    acc = lambda r: [x["test_acc"] for x in r.results["pretrain"]["rounds"]]  # noqa: E731
    assert acc(a) == acc(b)
    assert not np.array_equal(a.pretrained_state["head.weight"], c.pretrained_state["head.weight"])


def test_parallel_in_process_clients_give_the_sequential_results(tmp_path, monkeypatch):
    import fed_opc.flower as flower
    from fed_opc.config import parse_scenario
    from tests.helpers import tiny

    raw = tiny(**{"federation.rounds": 3, "data.num_clients": 5, "federation.clients_per_round": 3})
    raw["requests"] = [{"client": 1, "scope": "client", "round": 2}]
    raw["unlearning"] = {"methods": ["fed_opc", "fed_finetune"], "fed_opc": {"max_rounds": 1}}
    pools = []
    real_init = flower.InProcessGrid.__init__

    def record(self, *a, **kw):
        real_init(self, *a, **kw)
        pools.append(self.workers)

    monkeypatch.setattr(flower.InProcessGrid, "__init__", record)
    monkeypatch.setattr(flower.os, "cpu_count", lambda: 1)
    one = simulate(parse_scenario(raw), tmp_path / "one", use_cache=False, report=False)
    monkeypatch.setattr(flower.os, "cpu_count", lambda: 3)
    three = simulate(parse_scenario(raw), tmp_path / "three", use_cache=False, report=False)
    assert pools == [1, 3]
    for m in ("fed_opc", "fed_finetune"):
        a, b = one.states[m], three.states[m]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(one.pretrained_state[k], three.pretrained_state[k]) for k in one.pretrained_state)


def _counting_grid(n: int) -> tuple[InProcessGrid, list[int]]:
    """An in-process grid of ``n`` nodes whose ClientApp records the node id of every ``query.whoami`` it answers."""
    app = make_client_app(tiny_scenario(**{"data.num_clients": n}))
    asked: list[int] = []

    def counting(msg: Message, ctx: Context) -> Message:
        if msg.metadata.message_type == "query.whoami":
            asked.append(ctx.node_id)
        return app(msg, ctx)

    return InProcessGrid(counting, n), asked


def test_node_map_from_the_registration_order_asks_eight_nodes():
    grid, asked = _counting_grid(20)
    node_of = discover_nodes(grid, 20, timeout=10)
    assert node_of == {int(c.node_config["partition-id"]): nid for nid, c in grid._contexts.items()}
    assert len(asked) == 8 and asked[0] == node_of[0] and asked[-1] == node_of[19]


def test_node_map_falls_back_to_asking_every_node_when_the_order_is_not_the_partition_order(caplog):
    grid, asked = _counting_grid(20)
    # an engine that registered its nodes in another order than their partition ids
    grid._contexts = dict(reversed(list(grid._contexts.items())))
    node_of = discover_nodes(grid, 20, timeout=10)
    assert node_of == {int(c.node_config["partition-id"]): nid for nid, c in grid._contexts.items()}
    assert len(asked) == 8 + 20
    assert "registration order is not the partition order" in caplog.text
