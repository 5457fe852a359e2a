"""FedAvg with our own seeded client sampling, partition-id addressing and cost accounting.

Flower's ``FedAvg`` samples with the global ``random`` module and addresses random node ids. ``SeededFedAvg`` overrides
only the hooks it needs (as Flower's ``FedProx`` does): ``configure_train`` / ``configure_evaluate`` sample
``clients_per_round`` partition ids with a generator derived from (seed, round) over the sorted eligible ids, and
``aggregate_train`` / ``aggregate_evaluate`` count failures and bytes and aggregate replies in partition-id order, so
the result does not depend on the order in which Ray delivers replies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fed_opc.edge import Availability, EdgeClock, sampling_pool
from fed_opc.flower import EngineError, check_sender, message, record_bytes
from fed_opc.rng import numpy_rng

log = logging.getLogger("fed_opc")


def sample_clients(
    seed: int, server_round: int, eligible: Sequence[int], k: int, purpose: str = "sample_clients"
) -> list[int]:
    """``k`` distinct partition ids for ``server_round``, drawn from sorted ``eligible`` with a (seed, round) generator."""
    pool = np.array(sorted(eligible), dtype=np.int64)
    if k >= len(pool):
        return pool.tolist()
    return sorted(numpy_rng(seed, purpose, server_round).choice(pool, size=k, replace=False).tolist())


@dataclass
class CostMeter:
    """Communication and computation a strategy caused (payload bytes of arrays; samples processed by clients)."""

    bytes_down: int = 0
    bytes_up: int = 0
    client_samples: int = 0
    messages: int = 0
    failures: int = 0
    failed_clients: list[tuple[int, int]] = field(default_factory=list)  # (round, partition id)

    def as_dict(self) -> dict[str, int]:
        """The counters, as checkpoints and results store them (``failed_clients`` is left out; ``CostMeter(**d)``
        restores the rest).
        """
        return {
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "client_samples": self.client_samples,
            "messages": self.messages,
            "failures": self.failures,
        }


class SeededFedAvg(FedAvg):
    """FedAvg over partition ids with seeded sampling.

    Parameters
    ----------
    seed : scenario seed.
    node_of : partition id -> Flower node id.
    clients_per_round : clients sampled per round (all eligible clients when there are fewer).
    eligible : partition ids that may be sampled (e.g. without a client that left).
    round_offset : added to Flower's round number (1, 2, ...) to give the absolute round, so a resumed or continued
        run samples and seeds exactly as an uninterrupted one.
    stage : a label sent to clients (it names their training generator stream).
    exclude : ids of served deletion requests; clients drop those samples and refuse to read them.
    evaluate_clients : clients sampled for federated evaluation per round (0: none).
    max_failed_rounds : consecutive rounds in which every client fails before the run is stopped.
    availability : who is online in a round (sampling draws among online clients only); None: everybody.
    clock : the world's simulated clock; with device profiles, a client slower than the round deadline is a
        straggler whose update is dropped.

    """

    def __init__(
        self,
        *,
        seed: int,
        node_of: dict[int, int],
        clients_per_round: int,
        eligible: Sequence[int],
        round_offset: int = 0,
        stage: str = "train",
        exclude: Sequence[str] = (),
        evaluate_clients: int = 0,
        max_failed_rounds: int = 3,
        world: str = "main",
        update_sink=None,
        availability: Availability | None = None,
        clock: EdgeClock | None = None,
    ) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0 if evaluate_clients else 0.0)
        self.seed = seed
        self.node_of = dict(node_of)
        self.pid_of = {n: p for p, n in self.node_of.items()}
        self.clients_per_round = clients_per_round
        self.eligible = sorted(eligible)
        self.round_offset = round_offset
        self.stage = stage
        self.exclude = list(exclude)
        self.evaluate_clients = evaluate_clients
        self.max_failed_rounds = max_failed_rounds
        self.world = world
        self.update_sink = update_sink
        self.availability = availability
        self.clock = clock
        self._bytes_down = 0  # payload bytes of one message of the current round
        self._sent: dict[int, ArrayRecord] = {}
        self.cost = CostMeter()
        self.sampled: dict[int, list[int]] = {}
        self.train_loss: dict[int, float] = {}
        self._failed_streak = 0
        if not self.eligible:
            raise ValueError("no eligible clients to sample")

    def absolute_round(self, server_round: int) -> int:
        """Flower's round number (1, 2, ...) plus ``round_offset``: the round as the scenario counts it."""
        return server_round + self.round_offset

    def _messages(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, kind: str, pids: list[int]):
        config = ConfigRecord(dict(config))
        config["server-round"] = self.absolute_round(server_round)
        config["stage"] = self.stage
        config["exclude"] = list(self.exclude)
        config["world"] = self.world
        content = RecordDict({"arrays": arrays, "config": config})
        self._bytes_down = record_bytes(arrays)
        self.cost.bytes_down += record_bytes(arrays) * len(pids)
        self.cost.messages += len(pids)
        group = str(self.absolute_round(server_round))
        return [message(content, self.node_of[p], kind, group_id=group) for p in pids]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample ``clients_per_round`` of the eligible clients online this round with the (seed, round) generator and
        address ``train`` messages to their nodes; no message when none is online.
        """
        rnd = self.absolute_round(server_round)
        pool = sampling_pool(self.availability, rnd, self.eligible)
        pids = sample_clients(self.seed, rnd, pool, self.clients_per_round) if pool else []
        self.sampled[rnd] = pids
        if not pids:
            log.info("round %d: no eligible client is online; the global model waits", rnd)
        if self.update_sink is not None:
            self._sent = {rnd: arrays}
        return self._messages(server_round, arrays, config, "train", pids)

    def _sorted_valid(self, server_round: int, replies: Iterable[Message], expected: Sequence[int]) -> list[Message]:
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        answered = {check_sender(r, self.pid_of) for r in ok}
        failed = [p for p in expected if p not in answered]
        rnd = self.absolute_round(server_round)
        for r in replies:
            if r.has_error():
                log.warning(
                    "round %d: client %s failed: %s", rnd, self.pid_of.get(r.metadata.src_node_id), r.error.reason
                )
        if failed:
            self.cost.failures += len(failed)
            self.cost.failed_clients.extend((rnd, p) for p in failed)
            log.warning(
                "round %d: %d of %d clients failed or did not answer: %s", rnd, len(failed), len(expected), failed
            )
        return sorted(ok, key=lambda r: self.pid_of[r.metadata.src_node_id])

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Count failures, bytes and samples, drop stragglers and empty updates, then aggregate the rest in partition-id
        order. ``(None, None)`` (the model unchanged) when nothing is left; ``EngineError`` after ``max_failed_rounds``
        such rounds in a row.
        """
        rnd = self.absolute_round(server_round)
        if not self.sampled.get(rnd):  # nobody was online: an idle round, not a failure
            if self.clock is not None:
                self.clock.end_round(rnd)
            return None, None
        ok = self._sorted_valid(server_round, replies, self.sampled.get(rnd, []))
        for r in ok:
            self.cost.bytes_up += record_bytes(r.content["arrays"])
            self.cost.client_samples += int(r.content["metrics"]["samples"])
        if self.clock is not None:
            work = [
                (
                    self.pid_of[r.metadata.src_node_id],
                    int(r.content["metrics"]["samples"]),
                    self._bytes_down,
                    record_bytes(r.content["arrays"]),
                )
                for r in ok
            ]
            phase = self.clock.phase(work)
            self.clock.end_round(rnd)
            if phase.stragglers:
                log.info("round %d: stragglers dropped (past the deadline): %s", rnd, phase.stragglers)
                late = set(phase.stragglers)
                ok = [r for r in ok if self.pid_of[r.metadata.src_node_id] not in late]
                if not ok:
                    log.warning("round %d: every update came after the deadline; the global model is unchanged", rnd)
                    return None, None
        ok = [r for r in ok if int(r.content["metrics"]["num-examples"]) > 0]
        if self.update_sink is not None and rnd in self._sent:
            sent = self._sent[rnd].to_torch_state_dict()
            for r in ok:
                new = r.content["arrays"].to_torch_state_dict()
                update = {k: new[k].float() - sent[k].float() for k in new if new[k].is_floating_point()}
                self.update_sink(rnd, self.pid_of[r.metadata.src_node_id], update)
        if not ok:
            self._failed_streak += 1
            if self._failed_streak >= self.max_failed_rounds:
                raise EngineError(f"no client update in {self._failed_streak} consecutive rounds (last: round {rnd})")
            log.warning("round %d: no usable client update; the global model is unchanged", rnd)
            return None, None
        self._failed_streak = 0
        arrays, metrics = super().aggregate_train(server_round, ok)
        if metrics is not None and "train_loss" in metrics:
            self.train_loss[rnd] = float(metrics["train_loss"])
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample ``evaluate_clients`` eligible clients (online or not) for ``evaluate`` messages; none when it is 0."""
        if not self.evaluate_clients:
            return []
        rnd = self.absolute_round(server_round)
        pids = sample_clients(self.seed, rnd, self.eligible, self.evaluate_clients, "sample_eval_clients")
        self._eval_sampled = pids
        return self._messages(server_round, arrays, config, "evaluate", pids)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Aggregate the valid, non-empty evaluation replies in partition-id order (failures counted); None if none."""
        ok = self._sorted_valid(server_round, replies, getattr(self, "_eval_sampled", []))
        ok = [r for r in ok if int(r.content["metrics"]["num-examples"]) > 0]
        return super().aggregate_evaluate(server_round, ok) if ok else None
