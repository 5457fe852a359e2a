"""Availability, device profiles and the simulated clock, with hand-made numbers."""

import pytest

from fed_opc.config import ConfigError
from fed_opc.edge import (
    Availability,
    AvailabilityConfig,
    DeviceProfile,
    Devices,
    DevicesConfig,
    EdgeClock,
    profile_counts,
    read_trace,
)
from tests.helpers import tiny_scenario

PHONE = DeviceProfile("phone", 0.5, samples_per_s=50, up_mbps=1, down_mbps=2)
TABLET = DeviceProfile("tablet", 0.5, samples_per_s=200, up_mbps=4, down_mbps=8)


def test_bernoulli_matches_p_and_is_a_function_of_seed_round_client():
    av = Availability(AvailabilityConfig(kind="bernoulli", p=0.3), seed=0, num_clients=100)
    online = [len(av.online(r, range(100))) for r in range(1, 201)]
    share = sum(online) / (100 * 200)
    assert abs(share - 0.3) < 0.01  # 20,000 draws: the standard error is 0.0032
    again = Availability(AvailabilityConfig(kind="bernoulli", p=0.3), seed=0, num_clients=100)
    assert [av.online(r, range(100)) for r in (1, 7, 50)] == [again.online(r, range(100)) for r in (1, 7, 50)]
    other = Availability(AvailabilityConfig(kind="bernoulli", p=0.3), seed=1, num_clients=100)
    assert av.online(1, range(100)) != other.online(1, range(100))


def test_diurnal_each_client_is_online_one_window_per_period():
    av = Availability(AvailabilityConfig(kind="diurnal", period=24, online_fraction=0.25), seed=3, num_clients=50)
    for pid in range(50):
        on = [r for r in range(1, 49) if av.is_online(pid, r)]
        assert len(on) == 12  # 6 rounds per period, two periods
        phases = {r % 24 for r in on}
        # one window of 6 consecutive rounds modulo the period (it may wrap around the period's end)
        assert any(phases == {(s + k) % 24 for k in range(6)} for s in range(24))
    # clients are spread over the period: not all share one phase
    assert len({tuple(av.online(r, range(50))) for r in range(1, 25)}) > 10


def test_trace_is_obeyed_exactly(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("client,round_from,round_to\n0,1,2\n1,3,3\n0,5,6\n")
    av = Availability(AvailabilityConfig(kind="trace", file="t.csv"), seed=0, num_clients=3, base_dir=tmp_path)
    assert [av.online(r, range(3)) for r in range(1, 8)] == [[0], [0], [1], [], [0], [0], []]
    assert av.next_online([1], after=3, limit=10) is None and av.next_online([0], after=2, limit=10) == 5


def test_bad_trace_lines_name_the_file_line(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("client,round_from,round_to\n0,3,1\n")
    with pytest.raises(ConfigError, match=r"t.csv line 2: expected 0 <= round_from <= round_to, got 3, 1"):
        read_trace(f, 4)
    f.write_text("client,round_from,round_to\n9,1,1\n")
    with pytest.raises(ConfigError, match=r"line 2: client 9 is not in 0..3"):
        read_trace(f, 4)


def test_profiles_are_assigned_with_exact_shares():
    cfg = DevicesConfig(profiles=(DeviceProfile("phone", 0.7, 50, 5, 20), DeviceProfile("tablet", 0.3, 200, 10, 50)))
    assert profile_counts(Devices(cfg, seed=0, num_clients=10)) == {"phone": 7, "tablet": 3}
    assert profile_counts(Devices(cfg, seed=0, num_clients=11)) == {"phone": 8, "tablet": 3}  # 7.7 -> 8, 3.3 -> 3


def test_clock_of_a_two_client_round_and_a_straggler():
    devices = Devices(DevicesConfig(profiles=(PHONE, TABLET), round_deadline_s=20.0), seed=0, num_clients=2)
    phone = next(p for p, prof in devices.profile_of.items() if prof.name == "phone")
    tablet = 1 - phone
    clock = EdgeClock(devices)
    # phone: 500 samples / 50 + 2 MB down / 2 MB/s + 1 MB up / 1 MB/s = 10 + 1 + 1 = 12 s
    # tablet: 1000 / 200 + 2 / 8 + 1 / 4 = 5.5 s; the round lasts the slower accepted client: 12 s
    res = clock.phase([(phone, 500, 2_000_000, 1_000_000), (tablet, 1000, 2_000_000, 1_000_000)])
    assert res.accepted == [phone, tablet] and res.stragglers == [] and res.seconds == 12.0
    # phone with 1000 samples: 20 + 1 + 1 = 22 s > 20: a straggler, dropped; the server waited until the deadline
    res = clock.phase([(phone, 1000, 2_000_000, 1_000_000), (tablet, 1000, 2_000_000, 1_000_000)])
    assert res.accepted == [tablet] and res.stragglers == [phone] and res.seconds == 20.0
    assert clock.now_s == 32.0 and clock.stragglers == 1
    assert clock.busy_s == {"phone": 34.0, "tablet": 11.0}
    assert clock.bytes == {"phone": 6_000_000, "tablet": 6_000_000}


def test_edge_settings_are_validated_with_the_field_named(tmp_path):
    with pytest.raises(ConfigError, match=r"federation.availability.p: required by availability kind bernoulli"):
        tiny_scenario(**{"federation.availability": {"kind": "bernoulli"}})
    with pytest.raises(ConfigError, match=r"federation.availability.period: not used by availability kind bernoulli"):
        tiny_scenario(**{"federation.availability": {"kind": "bernoulli", "p": 0.5, "period": 3}})
    two = [
        {"name": "a", "share": 0.5, "samples_per_s": 1, "up_mbps": 1, "down_mbps": 1},
        {"name": "b", "share": 0.4, "samples_per_s": 1, "up_mbps": 1, "down_mbps": 1},
    ]
    with pytest.raises(ConfigError, match=r"federation.devices.profiles: the shares must add up to 1, got 0.9"):
        tiny_scenario(**{"federation.devices": {"profiles": two}})
    with pytest.raises(ConfigError, match=r"federation.devices.round_deadline_s: needs device profiles"):
        tiny_scenario(**{"federation.devices": {"round_deadline_s": 3}})
    with pytest.raises(ConfigError, match=r"unlearning.fallback: expected one of fed_finetune, fed_retrain, got"):
        tiny_scenario(unlearning={"methods": ["fed_opc"], "fallback": "fed_opc"})
    with pytest.raises(ConfigError, match=r"federation.availability.file: cannot read"):
        tiny_scenario(**{"federation.availability": {"kind": "trace", "file": str(tmp_path / "missing.csv")}})
