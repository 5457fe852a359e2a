"""A stage of federated training (FedAvg rounds) on a grid, with per-round evaluation and checkpoints.

Used for pretraining and, with served requests excluded, by the federated baselines that keep training. With a
``checkpoint`` path the stage saves its state after every round and, when the file exists, resumes from it: the same
final state, records and (cumulative) cost as an uninterrupted stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from fed_opc.checkpoint import load_checkpoint, save_checkpoint
from fed_opc.data.scenario_data import ScenarioData
from fed_opc.flower import arrays_from_state, state_from_arrays
from fed_opc.models import new_model
from fed_opc.train import predict
from strategies.fedavg import CostMeter, SeededFedAvg

log = logging.getLogger("fed_opc")


@dataclass
class RoundRecord:
    """One training round: its absolute number, wall seconds, test accuracy and loss (NaN when not evaluated), the
    sampled clients and their aggregated train loss (None without one).
    """

    round: int
    wall_s: float
    test_acc: float = float("nan")
    test_loss: float = float("nan")
    clients: list[int] = field(default_factory=list)
    train_loss: float | None = None

    def as_dict(self) -> dict:
        """The record as checkpoints and results store it (``test_acc``/``test_loss`` only for an evaluated round);
        ``RoundRecord(**d)`` reads it back.
        """
        d: dict = {"round": self.round}
        if self.test_acc == self.test_acc:  # evaluated this round (nan otherwise: absent, per the results contract)
            d |= {"test_acc": self.test_acc, "test_loss": self.test_loss}
        d["wall_s"] = self.wall_s
        if self.train_loss is not None:
            d["train_loss"] = self.train_loss
        d["clients"] = list(self.clients)
        return d


@dataclass
class TrainingResult:
    """What :func:`federated_training` returns: the final global state, one record per round (resumed rounds included)
    and the cumulative cost.
    """

    state: dict[str, torch.Tensor]
    rounds: list[RoundRecord]
    cost: CostMeter


def test_logits(
    sc, sd: ScenarioData, state: dict[str, torch.Tensor], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Logits of a global model state on the scenario's test indices (the server's held-out data)."""
    model = new_model(sc, sd).to(device)
    model.load_state_dict(state, strict=True)
    return predict(model, sd.data.test, sd.test_idx, device=device)


def evaluate_global(
    sc, sd: ScenarioData, state: dict[str, torch.Tensor], device: torch.device | str = "cpu"
) -> tuple[float, float]:
    """Test accuracy and loss of a global model state on the scenario's test indices."""
    logits = test_logits(sc, sd, state, device)
    y = torch.from_numpy(sd.data.test.labels[sd.test_idx])
    return float((logits.argmax(1) == y).float().mean()), float(torch.nn.functional.cross_entropy(logits, y))


def federated_training(
    grid,
    sc,
    sd: ScenarioData,
    node_of: dict[int, int],
    *,
    initial_state: dict[str, torch.Tensor],
    first_round: int,
    last_round: int,
    stage: str,
    exclude: Sequence[str] = (),
    eligible: Sequence[int] | None = None,
    checkpoint: Path | None = None,
    checkpoint_extra: Callable[[], dict[str, Any]] | None = None,
    on_resume: Callable[[dict[str, Any]], None] | None = None,
    on_round_end: Callable[[RoundRecord], None] | None = None,
    lr: float | None = None,
    world: str = "main",
    update_sink=None,
    availability=None,
    clock=None,
) -> TrainingResult:
    """Run FedAvg rounds ``first_round..last_round`` (absolute numbers) from ``initial_state``.

    ``checkpoint``: saved after every round (with the entries of ``checkpoint_extra()``); if it exists, the stage
    continues after its round, and ``on_resume(saved)`` sees the saved entries first. ``on_round_end(record)`` is
    called after every round. The returned cost counts the rounds before a resume too.
    """
    fed = sc.federation
    history: list[RoundRecord] = []
    prev_cost: dict[str, int] = {}
    if checkpoint is not None and checkpoint.is_file():
        saved = load_checkpoint(checkpoint)
        if on_resume is not None:
            on_resume(saved)
        initial_state, first_round = saved["state"], int(saved["round"]) + 1
        if clock is not None and "clock" in saved:
            clock.restore(saved["clock"])
        history = [RoundRecord(**r) for r in saved["rounds"]]
        prev_cost = dict(saved["cost"])
        log.info("[%s] resuming after round %d", stage, first_round - 1)
    if eligible is None:
        eligible = [p for p in range(sd.num_clients)]
    strategy = SeededFedAvg(
        seed=sc.seed,
        node_of=node_of,
        clients_per_round=fed.clients_per_round,
        eligible=eligible,
        round_offset=first_round - 1,
        stage=stage,
        exclude=exclude,
        evaluate_clients=int(round(fed.fraction_evaluate * len(eligible))),
        world=world,
        update_sink=update_sink,
        availability=availability,
        clock=clock,
    )
    strategy.cost = CostMeter(**prev_cost)
    records = history
    t_round = [time.perf_counter()]

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            t_round[0] = time.perf_counter()
            return None
        rnd = strategy.absolute_round(server_round)
        state = state_from_arrays(arrays)
        evaluated = rnd % fed.evaluate_every == 0 or rnd == last_round
        acc, loss = evaluate_global(sc, sd, state) if evaluated else (float("nan"), float("nan"))
        now = time.perf_counter()
        rec = RoundRecord(rnd, now - t_round[0], acc, loss, strategy.sampled.get(rnd, []), strategy.train_loss.get(rnd))
        t_round[0] = now
        records.append(rec)
        if evaluated:
            log.info("[%s] round %d: test_acc %.4f test_loss %.4f (%.1f s)", stage, rnd, acc, loss, rec.wall_s)
        else:
            log.info("[%s] round %d: trained (%.1f s; evaluated every %d rounds)", stage, rnd, rec.wall_s,
                     fed.evaluate_every)  # fmt: skip
        if checkpoint is not None:
            entry = {
                "round": rnd,
                "state": state,
                "rounds": [r.as_dict() for r in records],
                "cost": strategy.cost.as_dict(),
            }
            if clock is not None:
                entry["clock"] = clock.state()
            save_checkpoint(checkpoint, entry | (checkpoint_extra() if checkpoint_extra is not None else {}))
        if on_round_end is not None:
            on_round_end(rec)
        return MetricRecord({"test_acc": acc, "test_loss": loss})

    n = last_round - first_round + 1
    if n <= 0:
        return TrainingResult(dict(initial_state), records, strategy.cost)
    result = strategy.start(
        grid=grid,
        initial_arrays=arrays_from_state(initial_state),
        num_rounds=n,
        timeout=fed.round_timeout_s,
        train_config=ConfigRecord({"lr": fed.lr, "epochs": fed.local_epochs} | ({"lr": lr} if lr else {})),
        evaluate_fn=evaluate_fn,
    )
    final = (
        state_from_arrays(result.arrays) if result.arrays is not None and len(result.arrays) else dict(initial_state)
    )
    return TrainingResult(final, records, strategy.cost)
