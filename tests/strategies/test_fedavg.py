"""SeededFedAvg's hooks, fed hand-made reply messages (no engine)."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fed_opc.flower import EngineError, ensure_task_identity, message
from strategies.fedavg import SeededFedAvg, sample_clients

NODE_OF = {0: 1111, 1: 2222, 2: 3333, 3: 4444}


PID_OF = {n: p for p, n in NODE_OF.items()}


def _reply_to(
    dst: int, arrays: dict | None, n: int, samples: int = 10, error: str | None = None, sender: int | None = None
) -> Message:
    """A reply from node ``dst``, stamped with its partition id as the ClientApp stamps it (``sender`` overrides)."""
    ensure_task_identity()
    instr = message(RecordDict(), dst, "train")
    instr.metadata.__dict__["_message_id"] = f"m{dst}"
    if error:
        return Message(Error(code=0, reason=error), reply_to=instr)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()}),
            "metrics": MetricRecord(
                {
                    "num-examples": n,
                    "train_loss": 1.0,
                    "samples": samples,
                    "partition-id": PID_OF.get(dst, -1) if sender is None else sender,
                }
            ),
        }
    )
    return Message(content, reply_to=instr)


def _strategy(**kw) -> SeededFedAvg:
    return SeededFedAvg(seed=0, node_of=NODE_OF, clients_per_round=2, eligible=[0, 1, 2, 3], **kw)


def test_weighted_average_of_two_replies():
    s = _strategy()
    s.sampled[1] = [0, 1]
    arrays, metrics = s.aggregate_train(
        1, [_reply_to(1111, {"w": [1.0, 1.0]}, 1), _reply_to(2222, {"w": [3.0, 5.0]}, 3)]
    )
    assert np.allclose(arrays["w"].numpy(), [2.5, 4.0])
    assert s.cost.client_samples == 20 and s.cost.bytes_up == 16
    assert "partition-id" not in metrics  # the sender's stamp is checked and removed, never averaged


def test_a_reply_from_another_partition_than_the_map_says_stops_the_round():
    s = _strategy()
    s.sampled[1] = [0, 1]
    replies = [_reply_to(1111, {"w": [1.0]}, 1), _reply_to(2222, {"w": [3.0]}, 3, sender=3)]
    with pytest.raises(EngineError, match="node 2222 answered as partition 3, the node map says 1"):
        s.aggregate_train(1, replies)


def test_aggregation_order_does_not_depend_on_reply_order():
    rng = np.random.default_rng(0)
    vals = {nid: rng.normal(size=50).astype(np.float32) for nid in NODE_OF.values()}

    def replies():  # fresh each time: the server removes the sender's stamp from a reply it checked
        return [_reply_to(nid, {"w": v}, int(10 + i)) for i, (nid, v) in enumerate(vals.items())]

    s1, s2 = _strategy(), _strategy()
    s1.sampled[1] = s2.sampled[1] = [0, 1, 2, 3]
    a1, _ = s1.aggregate_train(1, replies())
    a2, _ = s2.aggregate_train(1, list(reversed(replies())))
    assert np.array_equal(a1["w"].numpy(), a2["w"].numpy())


def test_failed_reply_is_counted_and_round_goes_on():
    s = _strategy()
    s.sampled[2] = [0, 1, 2]
    arrays, _ = s.aggregate_train(2, [_reply_to(1111, {"w": [2.0]}, 1), _reply_to(2222, None, 0, error="boom")])
    assert np.allclose(arrays["w"].numpy(), [2.0])
    assert s.cost.failures == 2  # one error reply, one client that never answered
    assert sorted(p for _, p in s.cost.failed_clients) == [1, 2]


def test_crash_loop_stops_the_run():
    s = _strategy(max_failed_rounds=2)
    s.sampled[1] = s.sampled[2] = [0]
    assert s.aggregate_train(1, [_reply_to(1111, None, 0, error="x")]) == (None, None)
    with pytest.raises(EngineError, match="no client update in 2 consecutive rounds"):
        s.aggregate_train(2, [_reply_to(1111, None, 0, error="x")])


def test_configure_train_samples_seeded_partitions_and_addresses_their_nodes():
    ensure_task_identity()
    s = _strategy(round_offset=10, exclude=["r0"], stage="pretrain")
    msgs = list(s.configure_train(1, ArrayRecord({"w": torch.zeros(3)}), ConfigRecord({"lr": 0.1}), grid=None))
    expected = sample_clients(0, 11, [0, 1, 2, 3], 2)
    assert [m.metadata.dst_node_id for m in msgs] == [NODE_OF[p] for p in expected]
    cfg = msgs[0].content["config"]
    assert cfg["server-round"] == 11 and list(cfg["exclude"]) == ["r0"] and cfg["stage"] == "pretrain"
    assert s.cost.bytes_down == 2 * 12 and s.cost.messages == 2


def test_sampling_is_reproducible_and_depends_on_round():
    a = [sample_clients(3, r, range(100), 10) for r in range(1, 6)]
    b = [sample_clients(3, r, list(reversed(range(100))), 10) for r in range(1, 6)]
    assert a == b  # eligible order does not matter: sampling runs over sorted ids
    assert len({tuple(x) for x in a}) == 5 and all(len(set(x)) == 10 for x in a)
    assert sample_clients(4, 1, range(100), 10) != a[0]
    assert sample_clients(0, 1, [5, 7], 10) == [5, 7]


def test_flowers_own_sampler_is_not_reproducible_across_processes():
    """Flower samples with the global ``random`` module: two fresh processes draw differently (ours do not)."""
    import subprocess
    import sys

    code = (
        "import random, sys\n"
        "from flwr.serverapp.strategy.strategy_utils import sample_nodes\n"
        "class G:\n    def get_node_ids(self): return list(range(100))\n"
        "print(sorted(sample_nodes(G(), 10, 10)[0]))\n"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(3)
    }
    assert len(outs) > 1


def test_the_log_names_rounds_without_evaluation_instead_of_printing_nan(tmp_path):
    from strategies.run import simulate
    from tests.helpers import tiny_scenario

    simulate(
        tiny_scenario(**{"federation.rounds": 3, "federation.evaluate_every": 2}),
        tmp_path / "run",
        use_cache=False,
        report=False,
    )
    lines = [x.split("INFO fed_opc: ")[1] for x in (tmp_path / "run" / "log.txt").read_text().splitlines()
             if "[pretrain] round" in x]  # fmt: skip
    assert lines[0].startswith("[pretrain] round 1: trained (") and lines[0].endswith("; evaluated every 2 rounds)")
    assert lines[1].startswith("[pretrain] round 2: test_acc ")
    assert lines[2].startswith("[pretrain] round 3: test_acc ")  # the last round is always evaluated
    assert "nan" not in "\n".join(lines)
