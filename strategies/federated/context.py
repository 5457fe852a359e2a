"""What every federated method reads and returns: its context, its outcome, and the requests' shared rules.

``FedContext`` is what a serve function is given (the grid, the scenario, the node map, its world, its checkpoint
folder, the edge federation's availability and clock); ``MethodOutcome`` is what it returns. The helpers here read the
scenario's data or the server's own held-out data and are shared by both ``fed_opc`` protocols and the baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fed_opc.data.forget import ForgetSplit, union_forget
from fed_opc.data.scenario_data import ScenarioData
from fed_opc.edge import Availability, EdgeClock, sampling_pool
from strategies.cost import Cost
from strategies.training import test_logits


@dataclass
class FedContext:
    """What a federated method needs: the grid, the scenario, the node map, its world and its checkpoint folder."""

    grid: Any
    sc: Any
    sd: ScenarioData
    node_of: dict[int, int]
    world: str
    served_before: list[str]  # ids this world served at earlier request rounds
    round0: int  # absolute round at which the requests fire
    ckpt_dir: Path
    init_state: dict[str, torch.Tensor] | None = None  # the seeded initial model (fed_retrain, fed_eraser)
    pretrain_rounds: int = 0
    update_history: dict[int, dict[int, dict[str, torch.Tensor]]] | None = None  # fed_eraser: round -> pid -> update
    availability: Availability | None = None  # who is online per round (None: everybody, always)
    clock: EdgeClock | None = None  # this world's simulated clock (device profiles)

    @cached_property
    def pid_of(self) -> dict[int, int]:
        """Flower node id -> partition id: ``node_of`` inverted once, for reading who sent a reply."""
        return {n: p for p, n in self.node_of.items()}

    def online(self, rnd: int, pids: Sequence[int]) -> list[int]:
        """The clients of ``pids`` that are online in round ``rnd``."""
        return sampling_pool(self.availability, rnd, pids)


@dataclass
class MethodOutcome:
    """What a serve function returns: the final global state and its cost, plus what the run reports beside them
    (diagnostics, what the server observed, per-request latency, the edge clock, the stage's wall time).
    """

    state: dict[str, torch.Tensor]
    cost: Cost
    diagnostics: dict[str, Any] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)  # what the server saw, for the attacks
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> when and by whom it was served
    edge: dict[str, Any] = field(default_factory=dict)  # the world's simulated clock and device costs
    wall_s: float = 0.0  # the seconds the method's stage took (set by the run, for the whole stage)


def remaining_clients(sd: ScenarioData, exclude: Sequence[str]) -> list[int]:
    """Partition ids that still hold data once the ``exclude`` requests are removed."""
    gone = union_forget([sd.request(r) for r in exclude])
    return [p for p in range(sd.num_clients) if len(np.setdiff1d(sd.partitions[p], gone))]


def per_class_test_accuracy(ctx: FedContext, state: dict[str, torch.Tensor]) -> list[float]:
    """The server's held-out accuracy of ``state`` per class (its own evaluation data; no client data involved)."""
    sd = ctx.sd
    pred = test_logits(ctx.sc, sd, state).argmax(1).numpy()
    y = sd.data.test.labels[sd.test_idx]
    return [float((pred[y == c] == c).mean()) if (y == c).any() else 0.0 for c in range(sd.data.test.num_classes)]


def stop_rule_for(request: ForgetSplit, rule: str) -> str:
    """``auto``: contract to the norm-ratio threshold when a class is removed from every client; otherwise (a client's
    data, some samples, one client's share of a class: data the rest of the federation still represents) stop once the
    requester's forget accuracy reaches the server's held-out accuracy on those classes (``reference_acc``).
    """
    if rule != "auto":
        return rule
    return "norm_ratio" if request.scope == "class" and len(request.clients) > 1 else "reference_acc"


def fmt_reading(x: float | None, digits: int) -> str:
    """A reading for the log: ``digits`` decimals, or "undefined" for None (a ratio without retained energy)."""
    return "undefined" if x is None else f"{x:.{digits}f}"
