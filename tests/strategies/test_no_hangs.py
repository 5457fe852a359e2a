"""Engine failures end the run within a bounded time (each test runs under a timeout) with a clear error."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import strategies.run.driver as run_driver
from fed_opc.client_app import make_client_app
from fed_opc.flower import EngineError, check_ray_address, run_apps
from strategies.run import simulate
from strategies.server_app import make_server_main
from tests.helpers import tiny, tiny_scenario

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_empty_actor_pool_raises_instead_of_hanging():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the pool would not be empty")
    sc = tiny_scenario()
    with pytest.raises(EngineError, match="Ray simulation engine failed"):
        run_apps(make_client_app(sc), make_server_main(4, []), num_clients=4, backend="ray", num_gpus=1.0)


@pytest.mark.timeout(120)
def test_unreachable_ray_address_fails_fast_with_one_line(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(EngineError, match="no Ray cluster answers there"):
        check_ray_address(address, timeout_s=2)
    raw = tiny(name="unreach", **{"federation.backend": "ray", "federation.ray_address": address})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "simulate.py"), str(p), "--out", str(tmp_path / "o"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "no Ray cluster answers there" in lines[0]


@pytest.mark.timeout(240)
def test_exception_in_the_server_app_on_ray_ends_the_run(tmp_path, monkeypatch):
    raw = tiny(
        **{
            "federation.backend": "ray",
            "data.num_clients": 3,
            "federation.rounds": 1,
            "federation.clients_per_round": 2,
        }
    )
    raw["requests"] = [{"client": 1, "scope": "client", "round": 1}]
    raw["unlearning"] = {"methods": ["fed_opc"]}

    def broken_stage(*args, **kw):
        def stage(grid, node_of):
            raise ValueError("a bug in a strategy")

        return stage

    monkeypatch.setattr(run_driver, "method_stage", broken_stage)
    from fed_opc.config import parse_scenario

    with pytest.raises(ValueError, match="a bug in a strategy"):
        simulate(parse_scenario(raw), tmp_path / "run", use_cache=False)
    assert "a bug in a strategy" in (tmp_path / "run" / "log.txt").read_text()


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
