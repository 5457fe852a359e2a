"""Every test of the default run that starts Ray, in one file so that one pytest-xdist worker runs them in turn
(``--dist loadfile``): a real Flower ``run_simulation`` on Ray gives the in-process engine's numbers, and an exception in
the ServerApp or an actor pool that cannot be filled ends the run instead of hanging. Each Ray start costs 5-10 s on 2
cores; the rest of the suite runs on the in-process grid.
"""

import pytest
import torch

import strategies.run.driver as run_driver
from fed_opc.client_app import make_client_app
from fed_opc.config import parse_scenario
from fed_opc.flower import EngineError, run_apps
from strategies.run import simulate
from strategies.server_app import make_server_main
from tests.helpers import tiny, tiny_scenario


@pytest.mark.timeout(240)
def test_ray_run_simulation_matches_in_process(tmp_path):
    """A real Flower run on the Ray backend (2 actors), 3 clients x 2 rounds: same arrays as the in-process engine."""
    kw = {"data.num_clients": 3, "federation.rounds": 2, "federation.clients_per_round": 2}
    ray_run = simulate(
        tiny_scenario(**kw, **{"federation.backend": "ray"}), tmp_path / "ray", use_cache=False, report=False
    )
    ip_run = simulate(tiny_scenario(**kw), tmp_path / "ip", use_cache=False, report=False)
    a, b = ray_run.pretrained_state, ip_run.pretrained_state
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rs: [{k: v for k, v in x.items() if k != "wall_s"} for x in rs]  # noqa: E731
    assert strip(ray_run.results["pretrain"]["rounds"]) == strip(ip_run.results["pretrain"]["rounds"])


@pytest.mark.timeout(240)
def test_exception_in_the_server_app_on_ray_ends_the_run(tmp_path, monkeypatch):
    raw = tiny(
        **{
            "federation.backend": "ray",
            "data.num_clients": 3,
            "federation.rounds": 1,
            "federation.clients_per_round": 2,
            "federation.client_resources.num_cpus": 2,  # one actor on a 2-core machine
        }
    )
    raw["requests"] = [{"client": 1, "scope": "client", "round": 1}]
    raw["unlearning"] = {"methods": ["fed_opc"]}

    def broken_stage(*args, **kw):
        def stage(grid, node_of):
            raise ValueError("a bug in a strategy")

        return stage

    monkeypatch.setattr(run_driver, "method_stage", broken_stage)

    with pytest.raises(ValueError, match="a bug in a strategy"):
        simulate(parse_scenario(raw), tmp_path / "run", use_cache=False, report=False)
    assert "a bug in a strategy" in (tmp_path / "run" / "log.txt").read_text()


@pytest.mark.timeout(180)
def test_empty_actor_pool_raises_instead_of_hanging():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the pool would not be empty")
    sc = tiny_scenario()
    with pytest.raises(EngineError, match="Ray simulation engine failed"):
        run_apps(make_client_app(sc), make_server_main(4, []), num_clients=4, backend="ray", num_gpus=1.0)
