"""The one module that touches Flower's engine: running apps, the node map, and message helpers.

A Flower upgrade should only need changes here. Two engines run the same ``ServerApp``/``ClientApp`` code:

- ``ray``: ``flwr.simulation.run_simulation`` on Flower's Ray backend (the default; joins an existing cluster with
  ``federation.ray_address``, and otherwise forces a fresh local Ray so that a stray cluster is never joined by accident);
- ``inprocess``: ``InProcessGrid``, a ``Grid`` that calls the ``ClientApp`` directly in this process, deep-copying
  messages in and out as Ray's pickling does. It has no fixed start-up cost and serves fast tests and quick runs.

The server side always talks to the grid through ``GuardedGrid``, which polls for replies against a deadline and a
cancel event, so an engine that died (e.g. an empty actor pool) ends the run instead of leaving it waiting.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

log = logging.getLogger("fed_opc")
T = TypeVar("T")


class EngineError(RuntimeError):
    """The simulation engine failed or stopped answering."""


# ----------------------------------------------------------------------------------------------------------------------
# arrays


def arrays_from_state(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """A state dict as Flower's ``ArrayRecord`` (CPU tensors, key order kept)."""
    return ArrayRecord({k: v.detach().cpu() for k, v in state.items()})


def state_from_arrays(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """An ``ArrayRecord`` as a torch state dict (the inverse of :func:`arrays_from_state`)."""
    return record.to_torch_state_dict()


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors in a state dict, as serialised in a message (payload only)."""
    return int(sum(t.numel() * t.element_size() for t in state.values()))


def record_bytes(record: ArrayRecord) -> int:
    """Bytes of the arrays in an ``ArrayRecord`` (payload only), as :func:`state_bytes` counts a state dict."""
    return int(sum(a.numpy().nbytes for a in record.values()))


# ----------------------------------------------------------------------------------------------------------------------
# messages


def message(content: RecordDict, dst_node_id: int, message_type: str, group_id: str = "") -> Message:
    """An instruction message for one node."""
    return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)


def ensure_task_identity(run_id: int = 1) -> None:
    """Set Flower's process task identity, which ``Message(...)`` needs outside a running ServerApp (tests, tools)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 1


def partition_id(context: Context) -> int:
    """The partition id the node was started with (``partition-id`` in its node config)."""
    return int(context.node_config["partition-id"])


class GuardedGrid:
    """Wraps a ``Grid`` so that waiting for replies is bounded and cancellable.

    ``send_and_receive`` pushes, then polls ``pull_messages`` until every reply is in, the ``timeout`` passes (missing
    replies are returned as failures to the caller by their absence), or ``cancel`` is set (raises ``EngineError``).
    Everything else is delegated to the wrapped grid.
    """

    def __init__(self, grid: Grid, cancel: threading.Event, poll_s: float = 0.02) -> None:
        self._grid = grid
        self._cancel = cancel
        self._poll_s = poll_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> list[int]:
        """The wrapped grid's node ids; ``EngineError`` once ``cancel`` is set."""
        self._check()
        return list(self._grid.get_node_ids())

    def _check(self) -> None:
        if self._cancel.is_set():
            raise EngineError("the simulation engine stopped")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push ``messages`` and poll for their replies until all are in, ``timeout`` seconds pass (the missing ones are
        left out, with a warning) or ``cancel`` is set (``EngineError``).
        """
        self._check()
        ids = [i for i in self._grid.push_messages(list(messages)) if i]
        replies: list[Message] = []
        pending = set(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            got = list(self._grid.pull_messages(list(pending)))
            for m in got:
                pending.discard(m.metadata.reply_to_message_id)
            replies.extend(got)
            if not pending:
                break
            self._check()
            if deadline is not None and time.monotonic() > deadline:
                log.warning(
                    "%d of %d replies missing after %.0f s; going on without them", len(pending), len(ids), timeout
                )
                break
            time.sleep(self._poll_s)
        return replies


def wait_for_nodes(grid: Grid | GuardedGrid, n: int, timeout: float) -> list[int]:
    """Wait until ``n`` nodes have registered (they do so asynchronously) and return their ids."""
    deadline = time.monotonic() + timeout
    while len(ids := list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise EngineError(f"only {len(ids)} of {n} simulated clients registered within {timeout:.0f} s")
        time.sleep(0.05)
    return sorted(ids)


def registration_order(grid: Grid | GuardedGrid) -> list[int] | None:
    """The node ids in the order the engine registered them, where the engine registers simulated nodes itself.

    Flower's simulation engine registers its virtual nodes one after another in partition-id order, into the link state
    that its ``InMemoryGrid`` reads (``grid.state``), which lists nodes in registration order; ``InProcessGrid`` keeps
    its nodes in partition-id order. ``None`` for a grid whose nodes register themselves (the deployment runtime's
    SuperNodes, in whatever order they start): there only a ``query.whoami`` round can tell.
    """
    g = grid._grid if isinstance(grid, GuardedGrid) else grid
    if isinstance(g, InProcessGrid):
        return g.get_node_ids()
    get_node_info = getattr(getattr(g, "state", None), "get_node_info", None)
    if get_node_info is None:
        return None
    return [info.node_id for info in get_node_info()]


def _whoami(grid: Grid | GuardedGrid, node_ids: list[int], timeout: float) -> dict[int, int]:
    """Node id -> the partition id each of ``node_ids`` reports in a ``query.whoami`` round."""
    replies = grid.send_and_receive([message(RecordDict(), nid, "query.whoami") for nid in node_ids], timeout=timeout)
    answers: dict[int, int] = {}
    for r in replies:
        if r.has_error():
            raise EngineError(f"node {r.metadata.src_node_id} failed to report its partition id: {r.error.reason}")
        answers[r.metadata.src_node_id] = int(r.content["whoami"]["partition-id"])
    return answers


SPOT_CHECK_NODES = 8


def discover_nodes(grid: Grid | GuardedGrid, n: int, timeout: float) -> dict[int, int]:
    """Map partition id -> Flower node id (Flower's node ids are random).

    Where the engine registered the nodes itself (:func:`registration_order`), the map is that order, spot-checked by
    a ``query.whoami`` round on ``SPOT_CHECK_NODES`` nodes (the first, the last and a fixed sample): one message per
    checked node instead of one per node (10,000 nodes: 8 messages, not 10,000). Every reply the server uses is
    checked against the map as well (:func:`check_sender`), so a map that is wrong for an unchecked node stops the
    run at that node's first reply instead of giving wrong numbers. Elsewhere, or if the spot check disagrees, every
    node is asked.
    """
    t0 = time.perf_counter()
    node_ids = wait_for_nodes(grid, n, timeout)
    t1 = time.perf_counter()
    order = registration_order(grid)
    if order is not None and sorted(order) == node_ids:
        mapping = dict(enumerate(order))
        probe = list(range(n))
        if n > SPOT_CHECK_NODES:
            probe = [0, *sorted(random.Random(n).sample(range(1, n - 1), SPOT_CHECK_NODES - 2)), n - 1]
        if _whoami(grid, [mapping[p] for p in probe], timeout) == {mapping[p]: p for p in probe}:
            log.info(
                "%d nodes up (%.1f s); node map from the engine's registration order, checked by query.whoami on %d "
                "nodes (%.1f s)",
                n, t1 - t0, len(probe), time.perf_counter() - t1,
            )  # fmt: skip
            return mapping
        log.warning("the engine's registration order is not the partition order; asking every node for its partition")
    answers = _whoami(grid, node_ids, timeout)
    log.info("%d nodes up (%.1f s); node map by one query.whoami round (%.1f s)", n, t1 - t0, time.perf_counter() - t1)
    mapping = {p: nid for nid, p in answers.items()}
    if sorted(mapping) != list(range(n)):
        raise EngineError(f"node map incomplete: {len(mapping)} of {n} partitions answered")
    return mapping


SENDER_KEY = "partition-id"


def stamp_sender(reply: Message, context: Context) -> Message:
    """Add the sending node's partition id to ``reply``'s ``metrics`` (the ClientApp does this on every reply with
    metrics), so that the server can check each reply against its node map (:func:`check_sender`).
    """
    if not reply.has_error() and "metrics" in reply.content.metric_records:
        reply.content["metrics"][SENDER_KEY] = partition_id(context)
    return reply


def check_sender(reply: Message, pid_of: dict[int, int]) -> int:
    """The partition id of ``reply``'s sender by the server's map ``pid_of`` (node id -> partition id), after checking
    it against the id the sender stamped (:func:`stamp_sender`); the stamp is removed so that it is never aggregated
    as a metric. ``EngineError`` when they differ: a wrong node map would otherwise give wrong numbers silently.
    """
    pid = pid_of.get(reply.metadata.src_node_id)
    stamped = reply.content["metrics"].pop(SENDER_KEY, None)
    if stamped is None or int(stamped) != pid:
        raise EngineError(
            f"node {reply.metadata.src_node_id} answered as partition {stamped}, the node map says {pid}: the node map "
            "is wrong"
        )
    return pid


# ----------------------------------------------------------------------------------------------------------------------
# in-process engine


class InProcessGrid(Grid):
    """Runs every message through the ``ClientApp`` in this process; one persistent ``Context`` per virtual node.

    Node ids are random 63-bit integers like Flower's (from a fixed local generator), so code that confuses node ids
    with partition ids fails here too. Messages are deep-copied in both directions, as pickling across Ray does.

    With ``workers`` > 1 the messages of one push run on that many threads at once, each client with
    ``client_threads`` torch threads (as a Ray actor would): torch releases the GIL inside its kernels, so clients of a
    round train in parallel. Every client computes from its own message and generators and replies are read back by
    message id, so the results are those of sequential execution.
    """

    def __init__(
        self, client_app: ClientApp, num_nodes: int, run_id: int = 1, workers: int = 1, client_threads: int = 1
    ) -> None:
        from flwr.supercore.run import Run

        self.workers = max(1, int(workers))
        self.client_threads = max(1, int(client_threads))
        rng = random.Random(0)
        self._app = client_app
        self._contexts: dict[int, Context] = {}
        for pid in range(num_nodes):
            nid = rng.getrandbits(63)
            self._contexts[nid] = Context(
                run_id=run_id,
                node_id=nid,
                node_config={"partition-id": pid, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
        self._replies: dict[str, Message] = {}
        self._run = Run.create_empty(run_id)
        ensure_task_identity(run_id)

    def set_run(self, run: Any) -> None:
        """Set the ``Run`` this grid operates in, as Flower's ``Grid.set_run``."""
        self._run = run

    @property
    def run(self) -> Any:
        """The ``Run`` this grid operates in."""
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:  # noqa: D102
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:
        """The virtual nodes' ids, in partition-id order."""
        return list(self._contexts)

    def _handle(self, m: Message) -> Message:
        ctx = self._contexts[m.metadata.dst_node_id]
        try:
            rep = self._app(copy.deepcopy(m), ctx)
        except Exception as e:  # a client failure becomes an error reply, as on Ray
            log.warning("client %s raised %s", ctx.node_config["partition-id"], repr(e))
            rep = Message(Error(code=0, reason=repr(e)), reply_to=m)
        rep.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return copy.deepcopy(rep)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Run every message through the ``ClientApp`` now (on ``workers`` threads when each goes to a different node)
        and return the message ids whose replies :meth:`pull_messages` hands out.
        """
        messages = list(messages)
        ids = [str(uuid.uuid4()) for _ in messages]
        for m, mid in zip(messages, ids):
            m.metadata.__dict__["_message_id"] = mid
        nodes = [m.metadata.dst_node_id for m in messages]
        if self.workers > 1 and len(messages) > 1 and len(set(nodes)) == len(nodes):
            from concurrent.futures import ThreadPoolExecutor

            from fed_opc.threads import torch_threads

            # torch's thread count is process-wide: it is set once for the whole batch, to what each client uses
            with torch_threads(self.client_threads), ThreadPoolExecutor(min(self.workers, len(messages))) as pool:
                replies = list(pool.map(self._handle, messages))
        else:  # one at a time (also when a node gets two messages: its context is updated in order)
            replies = [self._handle(m) for m in messages]
        for mid, rep in zip(ids, replies):
            self._replies[mid] = rep
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """The replies to ``message_ids`` that are in; each reply is handed out once."""
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push, then pull: every reply is ready when :meth:`push_messages` returns, so ``timeout`` plays no part."""
        return self.pull_messages(self.push_messages(messages))


# ----------------------------------------------------------------------------------------------------------------------
# running


def resolve_ray_address(address: str) -> str:
    """The ``host:port`` that ``ray.init(address="auto")`` would connect to, found as Ray finds it.

    Ray reads ``$RAY_ADDRESS``, else its own record of the current cluster (``/tmp/ray/ray_current_cluster``), else any
    running GCS process; the record survives a cluster that died, which is why the address must then be checked.
    """
    from ray._private.services import get_ray_address_from_environment

    try:
        resolved = get_ray_address_from_environment(address, None)
    except ConnectionError as e:
        raise EngineError(f"federation.ray_address {address!r}: no running Ray cluster found ({e})") from None
    if not resolved or resolved == "auto":
        raise EngineError(f"federation.ray_address {address!r}: no running Ray cluster found")
    return resolved


def check_ray_address(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast when the cluster address does not answer (Ray itself would retry for minutes).

    ``auto`` is resolved the way Ray resolves it and the address it names is checked like an explicit one.
    """
    if address in (None, "local"):
        return
    import socket

    if address == "auto":
        resolved = resolve_ray_address(address)
        try:
            check_ray_address(resolved, timeout_s)
        except EngineError as e:
            raise EngineError(f"federation.ray_address 'auto' names {resolved}, which does not answer: {e}") from None
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise EngineError(f"federation.ray_address {address!r}: no Ray cluster answers there ({e})") from None


def _server_context() -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})


def run_apps(
    client_app: ClientApp,
    main: Callable[[GuardedGrid], T],
    *,
    num_clients: int,
    backend: str,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    ray_address: str | None = None,
) -> T:
    """Run ``main(grid)`` as the body of a ``ServerApp`` against ``num_clients`` simulated ``client_app`` nodes.

    Returns what ``main`` returns. An exception in ``main`` propagates; an engine failure raises ``EngineError``.
    """
    cancel = threading.Event()
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        out["result"] = main(GuardedGrid(grid, cancel))

    if backend == "inprocess":
        # as many clients at once as Ray would run actors on this machine, each with num_cpus threads
        workers = max(1, int((os.cpu_count() or 1) // max(num_cpus, 1e-9)))
        grid = InProcessGrid(client_app, num_clients, workers=workers, client_threads=max(1, int(num_cpus)))
        server(grid, _server_context())
        return out["result"]
    if backend != "ray":
        raise ValueError(f"unknown backend {backend!r}; valid: ray, inprocess")

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray's C++ failure-signal handler turns SIGTERM into an abort with a stack dump (exit 134); without it, SIGTERM
    # reaches the CLI's handler and ends the run like Ctrl-C, checkpoints intact
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    from flwr.simulation import run_simulation

    check_ray_address(ray_address)
    init_args: dict[str, Any] = {"address": ray_address or "local", "logging_level": logging.WARNING}
    if ray_address is None:
        # a fresh local Ray sized to this machine; never attach to a cluster that happens to be running
        init_args["num_cpus"] = os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "init_args": init_args,
    }
    try:
        run_simulation(
            server_app=server, client_app=client_app, num_supernodes=num_clients, backend_config=backend_config
        )
    except BaseException as e:
        cancel.set()  # release the ServerApp thread if it is still waiting on replies
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        cause = e.__cause__ or e
        if isinstance(e, RuntimeError) and str(e).startswith("An error was encountered"):
            raise EngineError(f"the Ray simulation engine failed: {cause!r}") from e
        raise
    finally:
        cancel.set()
    if "result" not in out:
        raise EngineError("the ServerApp ended without a result")
    return out["result"]
