"""Gradient ascent (GA) on the forget data, with a stopping rule.

Baseline "GA" of Thudi et al. (EuroS&P 2022) and Graves et al. (AAAI 2021), as run in Jia et al. (NeurIPS 2023) and
Fan et al. (ICLR 2024): minimise ``-CE`` on forget batches. The forget loss is unbounded above, so GA runs away: on the
small CNN it destroys the model within a few dozen steps even at lr 1e-4. Hence the stopping rule, checked after every
step: stop when

- the accuracy on a fixed, seeded probe of at most ``probe_size`` forget samples (checked every ``check_every`` steps)
  is at or below ``stop_forget_acc``, or
- the forget cross-entropy of the last batch exceeds ``max_forget_loss`` (the loss is exploding), or
- ``epochs`` passes over the forget data are done.

``diagnostics["stopped_by"]`` says which (``forget_acc``, ``loss``, ``budget``).

Defaults: up to 5 epochs over the forget data, SGD lr 1e-4, momentum 0.9, no weight decay, batch 128, gradient norm
clipped to 5, stop at forget accuracy <= 0.01 (class forgetting; for random samples set it near the test accuracy),
probe of 512 samples checked every 5 steps, loss ceiling 20 nats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fed_opc.losses import gradient_ascent
from fed_opc.models import FeatureModel
from fed_opc.schema import bounds
from fed_opc.train import LoopStats, accuracy, index_batches, limit, train_loop
from fed_opc.unlearning.base import UnlearnData, UnlearnResult, check_nonempty, optimizer_for, result, working_copy


@dataclass(frozen=True)
class Config:
    """Gradient-ascent hyperparameters (YAML block ``unlearning.ga``)."""

    epochs: float = field(default=5.0, metadata=bounds(gt=0))
    lr: float = field(default=1e-4, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    max_grad_norm: float | None = field(default=5.0, metadata=bounds(gt=0))
    stop_forget_acc: float = field(default=0.01, metadata=bounds(ge=0, le=1))
    probe_size: int = field(default=512, metadata=bounds(ge=1))
    check_every: int = field(default=5, metadata=bounds(ge=1))
    max_forget_loss: float = field(default=20.0, metadata=bounds(gt=0))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Ascend the forget loss on a copy of ``model`` until the stopping rule fires.

    Parameters
    ----------
    model : the model to unlearn from (not modified).
    data : forget indices (retain data is not used).
    cfg : hyperparameters.
    generator : draws the probe subset and the batch order.
    device : where to train.

    Returns
    -------
    The model; ``diagnostics`` holds ``stopped_by``, ``stop_step`` and ``probe_forget_acc`` at the stop.

    """
    check_nonempty("ga", data.forget_idx, "forget")
    student = working_copy(model, device)
    source = data.forget_source
    n_probe = min(cfg.probe_size, len(data.forget_idx))
    probe = np.sort(generator.choice(data.forget_idx, size=n_probe, replace=False))
    state = {"stopped_by": "budget", "probe_forget_acc": float("nan")}

    def should_stop(stats: LoopStats) -> bool:
        if -stats.losses[-1] > cfg.max_forget_loss:
            state["stopped_by"] = "loss"
            return True
        if stats.steps % cfg.check_every == 0:
            state["probe_forget_acc"] = accuracy(student, source, probe, device=device)
            if state["probe_forget_acc"] <= cfg.stop_forget_acc:
                state["stopped_by"] = "forget_acc"
                return True
        return False

    def batches():
        for idx in index_batches(data.forget_idx, cfg.batch_size, cfg.epochs, generator):
            x, y = source.tensors(idx, device)
            yield {"x_forget": x, "y_forget": y}

    stream = batches() if cfg.max_steps is None else limit(batches(), cfg.max_steps)
    opt = optimizer_for(student, cfg.lr, cfg.momentum, cfg.weight_decay)
    stats = train_loop(student, gradient_ascent, stream, opt, max_grad_norm=cfg.max_grad_norm, should_stop=should_stop)
    if state["stopped_by"] == "budget":
        state["probe_forget_acc"] = accuracy(student, source, probe, device=device)
    return result(student, [stats], stop_step=stats.steps, **state)
