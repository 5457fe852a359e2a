"""Edge federations on the in-process grid: sampling among online clients, requesters that come and go, fallbacks."""

import pytest
from flwr.app import ArrayRecord, ConfigRecord

import fed_opc.client_app as client_app
from fed_opc.config import parse_scenario
from fed_opc.edge import Availability, AvailabilityConfig
from fed_opc.flower import ensure_task_identity
from strategies.fedavg import SeededFedAvg
from strategies.run import simulate
from tests.helpers import tiny


def test_sampling_never_picks_an_offline_client():
    ensure_task_identity()
    av = Availability(AvailabilityConfig(kind="bernoulli", p=0.3), seed=0, num_clients=20)
    strategy = SeededFedAvg(
        seed=0, node_of={p: 100 + p for p in range(20)}, clients_per_round=4, eligible=range(20), availability=av
    )
    arrays = ArrayRecord()
    picked = 0
    for rnd in range(1, 301):
        msgs = list(strategy.configure_train(rnd, arrays, ConfigRecord(), grid=None))
        pids = [m.metadata.dst_node_id - 100 for m in msgs]
        assert all(av.is_online(p, rnd) for p in pids)
        assert len(pids) == min(4, len(av.online(rnd, range(20))))
        picked += len(pids)
    assert picked > 1000  # most rounds have 4 of the ~6 online clients


def _trace(tmp_path, rows):
    f = tmp_path / "trace.csv"
    f.write_text("client,round_from,round_to\n" + "".join(f"{c},{a},{b}\n" for c, a, b in rows))
    return str(f)


def edge_scenario(tmp_path, methods, requester_online_from, **extra):
    # clients 0, 2, 3, 4 are always online; the requester (client 1) only from `requester_online_from` on
    rows = [(c, 0, 100) for c in (0, 2, 3, 4)] + [(1, 0, 1), (1, requester_online_from, 100)]
    raw = tiny(
        **{
            "federation.rounds": 8,
            "data.num_clients": 5,
            "federation.clients_per_round": 3,
            "federation.availability": {"kind": "trace", "file": _trace(tmp_path, rows)},
        }
    )
    raw["requests"] = [{"id": "gone", "client": 1, "scope": "client", "round": 2} | extra]
    raw["unlearning"] = {"methods": methods, "fed_opc": {"max_rounds": 1, "protocol": "two_phase"}}
    return raw


@pytest.fixture
def calls(monkeypatch):
    seen = []
    for name in ("handle_train", "handle_unlearn"):
        real = getattr(client_app, name)

        def spy(sc, msg, context, real=real, name=name):
            cfg = msg.content["config"]
            seen.append(
                (
                    name,
                    int(context.node_config["partition-id"]),
                    int(cfg["server-round"]),
                    str(cfg["world"]),
                    tuple(cfg.get("exclude", [])),
                )
            )
            return real(sc, msg, context)

        monkeypatch.setattr(client_app, name, spy)
    return seen


def test_offline_requester_is_served_in_its_first_online_round(tmp_path, calls):
    raw = edge_scenario(tmp_path, ["fed_opc", "fed_finetune"], requester_online_from=5)
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    unlearn = [(pid, rnd) for name, pid, rnd, world, _ in calls if name == "handle_unlearn"]
    assert unlearn == [(1, 5)]  # offline in rounds 2-4, online from round 5: served there
    lat = r.results["requests"][0]["latency"]
    # fed_opc waited rounds 3 and 4 (FedAvg without the requester's data), served in one round (5)
    assert lat["fed_opc"] == {"requested_round": 2, "served_round": 5, "served_by": "fed_opc", "latency_rounds": 3}
    # fed_finetune does not need the requester: 5 rounds of FedAvg without its data from round 2
    assert lat["fed_finetune"] == {
        "requested_round": 2,
        "served_round": 7,
        "served_by": "fed_finetune",
        "latency_rounds": 5,
    }
    assert r.results["methods"]["fed_opc"]["edge"] == {"offline_met": 2}
    # the guard: from the request round on, no client of any world trains on the forget data
    for name, pid, rnd, world, exclude in calls:
        if name == "handle_train" and rnd > 2 and world != "main":
            assert "gone" in exclude and pid != 1


def test_overdue_request_is_served_by_the_fallback(tmp_path, calls):
    raw = edge_scenario(tmp_path, ["fed_opc"], requester_online_from=50, deadline_rounds=2)
    raw["unlearning"]["fallback"] = "fed_finetune"
    raw["federation"]["devices"] = {
        "profiles": [
            {"name": "phone", "share": 0.6, "samples_per_s": 40, "up_mbps": 1, "down_mbps": 2},
            {"name": "tablet", "share": 0.4, "samples_per_s": 400, "up_mbps": 10, "down_mbps": 20},
        ]
    }
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False)
    assert not [c for c in calls if c[0] == "handle_unlearn"]  # the requester never came online in time
    lat = dict(r.results["requests"][0]["latency"]["fed_opc"])
    latency_s = lat.pop("latency_s")
    # waited rounds 3-4 (deadline 2), then fed_finetune's 5 rounds from round 4: served at round 9
    assert lat == {
        "requested_round": 2,
        "served_round": 9,
        "served_by": "fed_finetune",
        "latency_rounds": 7,
        "overdue": True,
    }
    # served after the last round, so the world's clock ended when the request was served; it fired at the end of
    # pretraining (round 2)
    edge = r.results["methods"]["fed_opc"]["edge"]
    assert latency_s == edge["sim_seconds"] - r.results["pretrain"]["rounds"][-1]["sim_s"]
    assert edge["offline_met"] == 2 and edge["stragglers"] == 0 and sorted(edge["devices"]) == ["phone", "tablet"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Request latency" in report and "| gone | fed_opc | 2 | 9 | 7 |" in report
    assert (tmp_path / "run" / "plots" / "latency.png").is_file()
    assert (tmp_path / "run" / "plots" / "sim_clock.png").is_file()
    assert r.results["methods"]["fed_opc"]["diagnostics"]["requests"]["gone"]["served_by"] == "fed_finetune"
    assert r.results["requests"][0]["status"] == "done"


def test_always_online_without_profiles_is_todays_federation(tmp_path):
    base = tiny(**{"federation.rounds": 4, "data.num_clients": 5, "federation.clients_per_round": 3})
    base["requests"] = [{"id": "gone", "client": 1, "scope": "client", "round": 2}]
    base["unlearning"] = {"methods": ["fed_opc", "fed_finetune"], "fed_opc": {"max_rounds": 1}}
    explicit = dict(base, federation=dict(base["federation"], availability={"kind": "always"}, devices={}))
    a = simulate(parse_scenario(base), tmp_path / "a", use_cache=False, report=False)
    b = simulate(parse_scenario(explicit), tmp_path / "b", use_cache=False, report=False)

    def strip(r):
        return {m: {k: v for k, v in x["metrics"].items() if k != "RTE_s"} for m, x in r.results["methods"].items()}

    assert strip(a) == strip(b)
    assert all("edge" not in x for x in a.results["methods"].values())
    lat = a.results["requests"][0]["latency"]
    assert "latency_s" not in lat["fed_opc"] and lat["fed_opc"]["served_round"] == 3


def test_requests_of_one_round_stay_excluded_while_each_waits_for_its_requester(tmp_path, calls):
    rows = [(c, 0, 100) for c in (0, 3, 4)] + [(1, 0, 1), (1, 5, 100), (2, 0, 1), (2, 3, 100)]
    raw = tiny(
        **{
            "federation.rounds": 8,
            "data.num_clients": 5,
            "federation.clients_per_round": 3,
            "federation.availability": {"kind": "trace", "file": _trace(tmp_path, rows)},
        }
    )
    raw["requests"] = [
        {"id": "a", "client": 1, "scope": "client", "round": 2},
        {"id": "b", "client": 2, "scope": "client", "round": 2},
    ]
    raw["unlearning"] = {"methods": ["fed_opc"], "fed_opc": {"max_rounds": 1, "protocol": "two_phase"}}
    r = simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    unlearn = [(pid, rnd) for name, pid, rnd, _, _ in calls if name == "handle_unlearn"]
    assert unlearn == [(1, 5), (2, 6)]  # "a" waits for client 1 (online from 5), then "b" is served next
    lat = r.results["requests"]
    assert [q["latency"]["fed_opc"]["served_round"] for q in lat] == [5, 6]
    for name, pid, rnd, world, exclude in calls:
        if name == "handle_train" and rnd > 2 and world == "fed_opc":
            assert {"a", "b"} <= set(exclude) and pid not in (1, 2)


def test_a_stragglers_update_is_dropped_from_the_aggregate_and_counted(tmp_path, monkeypatch):
    from flwr.serverapp.strategy import FedAvg

    from fed_opc.edge import edge_of

    aggregated: list[tuple[int, list[int]]] = []
    real = FedAvg.aggregate_train

    def spy(self, server_round, replies):
        replies = list(replies)
        aggregated.append((server_round, sorted(self.pid_of[r.metadata.src_node_id] for r in replies)))
        return real(self, server_round, replies)

    monkeypatch.setattr(FedAvg, "aggregate_train", spy)
    raw = tiny(**{"federation.rounds": 4, "data.num_clients": 6, "federation.clients_per_round": 4})
    raw["federation"]["devices"] = {
        "profiles": [  # a "slow" device needs 10^5 s for its few samples: always past the 60 s deadline
            {"name": "slow", "share": 0.5, "samples_per_s": 0.001, "up_mbps": 10, "down_mbps": 10},
            {"name": "fast", "share": 0.5, "samples_per_s": 1000, "up_mbps": 10, "down_mbps": 10},
        ],
        "round_deadline_s": 60,
    }
    sc = parse_scenario(raw)
    slow = {pid for pid, p in edge_of(sc)[1].profile_of.items() if p.name == "slow"}
    assert len(slow) == 3
    r = simulate(sc, tmp_path / "run", use_cache=False, report=False)
    assert [rnd for rnd, _ in aggregated] == [1, 2, 3, 4]
    assert all(pids and not set(pids) & slow for _, pids in aggregated)  # only fast devices were averaged
    # each round waited until the deadline: 4 rounds x 60 s on the simulated clock
    assert [x["sim_s"] for x in r.results["pretrain"]["rounds"]] == [60.0, 120.0, 180.0, 240.0]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("stragglers dropped (past the deadline)") == 4
