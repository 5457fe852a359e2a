"""The Flower app that ``flwr run`` starts: ``server_app`` and ``client_app``, built from the run config.

``pyproject.toml`` declares them (``[tool.flwr.app.components]``), so the same run goes through Flower's own runtimes:

- simulation runtime: ``flwr run .`` (a local SuperLink in simulation mode runs both apps on Ray);
- deployment runtime: ``flwr run . <connection>`` against a SuperLink with SuperNodes, each SuperNode told its partition
  by its node config (``--node-config "partition-id=i num-partitions=N"``); ``scripts/deploy_local.py`` does this on
  one machine.

The run config (``[tool.flwr.app.config]``, overridable with ``--run-config``) names the scenario and the run directory.
The ServerApp runs the run's stages (``strategies.run.simulate``) on the grid Flower gives it and writes the same run
directory as ``scripts/simulate.py``; the ClientApp is ``fed_opc.client_app.make_client_app`` of the same scenario.
A node may take its data from its own node config (``data-root="/path"``) or environment (``FED_OPC_DATA_ROOT``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fed_opc.config import ConfigError, Scenario, load_scenario

log = logging.getLogger("fed_opc")

APP_DIR = Path(__file__).resolve().parents[1]  # the project checkout, or the installed FAB on a SuperLink/SuperNode


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What the run config of a ``flwr run`` says: the scenario, the run directory and how to treat it."""

    scenario: str
    out: str = ""
    resume: bool = False
    overwrite: bool = False
    use_cache: bool = True

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> RunSettings:
        """Parse a Flower run config; a wrong key or type raises ``ConfigError`` naming it."""
        where = "run config ([tool.flwr.app.config] / --run-config)"
        kinds = {"scenario": str, "out": str, "resume": bool, "overwrite": bool, "use-cache": bool}
        for key in config:
            if key not in kinds:
                raise ConfigError(key, f"unknown key; valid: {', '.join(kinds)}", where)
        values = {}
        for key, kind in kinds.items():
            if key in config:
                if not isinstance(config[key], kind):
                    raise ConfigError(key, f"expected {kind.__name__}, got {config[key]!r}", where)
                values[key.replace("-", "_")] = config[key]
        if not values.get("scenario"):
            raise ConfigError("scenario", "missing: the path of a scenario YAML file", where)
        return cls(**values)


def resolve_scenario_path(path: str) -> Path:
    """A scenario path from the run config: absolute, else relative to the app, else to the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (APP_DIR, Path.cwd()):
        if (base / p).is_file():
            return base / p
    return APP_DIR / p  # load_scenario then names the missing file


@functools.lru_cache(maxsize=8)
def _scenario(path: str) -> Scenario:
    return load_scenario(resolve_scenario_path(path))


def node_scenario(run_config: dict[str, Any], node_config: dict[str, Any]) -> Scenario:
    """The scenario a ClientApp serves: from the run config, with the node's own ``data-root`` when it has one."""
    sc = _scenario(str(run_config.get("scenario", "")))
    root = node_config.get("data-root")
    if root:
        sc = dataclasses.replace(sc, data=dataclasses.replace(sc.data, root=str(root)))
    return sc


@functools.lru_cache(maxsize=8)
def _client_app_for(path: str, data_root: str) -> ClientApp:
    from fed_opc.client_app import make_client_app

    node_config = {"data-root": data_root} if data_root else {}
    return make_client_app(node_scenario({"scenario": path}, node_config))


def _check_node(context: Context) -> str:
    """The run's scenario path, after checking that this node was started for as many partitions as it has clients."""
    path = str(context.run_config.get("scenario", ""))
    sc = _scenario(path)
    n = context.node_config.get("num-partitions")
    if n is not None and int(n) != sc.data.num_clients:
        raise ConfigError(
            "num-partitions",
            f"this node was started for {n} partitions, the scenario has {sc.data.num_clients} clients",
            "node config",
        )
    return path


def _delegate(msg: Message, context: Context) -> Message:
    """Handle ``msg`` with the ClientApp of the run's scenario (built once per process and scenario)."""
    path = _check_node(context)
    return _client_app_for(path, str(context.node_config.get("data-root", "")))(msg, context)


client_app = ClientApp()


@client_app.query("whoami")
def _whoami(msg: Message, context: Context) -> Message:
    # Answered here, as fed_opc.client_app.handle_whoami does, without importing torch: on the deployment runtime
    # every message is handled by a fresh flwr-clientapp process, and this one needs nothing but the node config.
    _check_node(context)
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"whoami": MetricRecord({"partition-id": pid})}), reply_to=msg)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    return _delegate(msg, context)


@client_app.train("unlearn")
def _unlearn(msg: Message, context: Context) -> Message:
    return _delegate(msg, context)


@client_app.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    return _delegate(msg, context)


def grid_engine(grid: Grid, cancel: threading.Event | None = None, poll_s: float = 0.25) -> Callable[..., Any]:
    """An engine for ``strategies.run.simulate`` that runs the server body on ``grid``, a grid Flower already runs.

    The ClientApp is not started here: it runs on the SuperNodes (or in Flower's simulation runtime). Replies are
    polled every ``poll_s`` seconds (each poll is a request to the SuperLink), bounded by the round timeout.
    """
    from fed_opc.flower import GuardedGrid

    guard = threading.Event() if cancel is None else cancel

    def engine(client_app: ClientApp, main: Callable[[Any], Any], **_: Any) -> Any:
        return main(GuardedGrid(grid, guard, poll_s=poll_s))

    return engine


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from strategies.run import default_out_dir, simulate

    settings = RunSettings.from_run_config(dict(context.run_config))
    sc = _scenario(settings.scenario)
    out = Path(settings.out).expanduser() if settings.out else default_out_dir(sc)
    out = out.resolve()
    log.warning("fed-opc: scenario %s -> run directory %s", sc.name, out)
    simulate(
        sc,
        out,
        resume=settings.resume,
        overwrite=settings.overwrite,
        use_cache=settings.use_cache,
        engine=grid_engine(grid),
    )
    log.warning("fed-opc: run directory written: %s", out)
