"""Engine failures end the run within a bounded time with a clear error (those that start Ray are in test_ray.py)."""

import socket

import pytest
import yaml

from fed_opc.flower import EngineError, check_ray_address
from strategies.cli import simulate_main
from tests.helpers import tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_unreachable_ray_address_fails_fast_with_one_line(tmp_path, capsys):
    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(EngineError, match="no Ray cluster answers there"):
        check_ray_address(address, timeout_s=2)
    raw = tiny(name="unreach", **{"federation.backend": "ray", "federation.ray_address": address})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    code = simulate_main([str(p), "--out", str(tmp_path / "o"), "--no-progress"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert (
        code == 1
        and len(lines) == 1
        and lines[0].startswith(f"error: {p}: ")
        and "no Ray cluster answers there" in lines[0]
    )


@pytest.mark.timeout(60)
def test_auto_address_naming_a_dead_cluster_fails_fast(monkeypatch):
    # Ray resolves "auto" through $RAY_ADDRESS (else its record of the current cluster, which outlives the cluster);
    # the address it names is checked like an explicit one instead of being retried for minutes
    dead = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", dead)
    with pytest.raises(EngineError, match=f"'auto' names {dead}, which does not answer"):
        check_ray_address("auto", timeout_s=2)


@pytest.mark.timeout(60)
def test_auto_address_with_a_live_listener_passes_the_check(monkeypatch):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{srv.getsockname()[1]}")
        check_ray_address("auto", timeout_s=2)  # answers: no error
