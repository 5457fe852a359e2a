"""Retrain from scratch on the retain data: the exact-unlearning reference every other method is measured against.

The model is re-initialised with the same architecture (read from the given model itself, so no separate description
is needed) from a generator derived from the method's generator, then trained with cross-entropy on retain data only;
with a guarded dataset, any read of a forget sample raises. Used as the gold standard in Golatkar et al. (CVPR 2020),
Jia et al. (NeurIPS 2023), Fan et al. (ICLR 2024).

Defaults: 8 epochs, SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 128, and a cosine learning-rate decay over the
run. Match ``epochs`` to the pretraining budget for a fair reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fed_opc.losses import cross_entropy
from fed_opc.models import FeatureModel
from fed_opc.schema import bounds
from fed_opc.train import limit, supervised_batches, train_loop
from fed_opc.unlearning.base import (
    UnlearnData,
    UnlearnResult,
    check_nonempty,
    optimizer_for,
    reinitialized,
    result,
    torch_generator,
)


@dataclass(frozen=True)
class Config:
    """Retrain hyperparameters (YAML block ``unlearning.retrain``)."""

    epochs: float = field(default=8.0, metadata=bounds(gt=0))
    lr: float = field(default=0.05, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    cosine: bool = True
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Train a fresh copy of ``model``'s architecture on ``data.retain_idx`` only.

    Parameters
    ----------
    model : supplies the architecture; its weights are not used and it is not modified.
    data : retain indices (forget samples are never read).
    cfg : hyperparameters.
    generator : draws the initial weights and the batch order.
    device : where to train.

    """
    check_nonempty("retrain", data.retain_idx, "retain")
    fresh = reinitialized(model, torch_generator(generator)).to(device)
    batches = supervised_batches(data.train, data.retain_idx, cfg.batch_size, cfg.epochs, generator, device)
    total = -(-int(round(cfg.epochs * len(data.retain_idx))) // cfg.batch_size)
    if cfg.max_steps is not None:
        batches = limit(batches, cfg.max_steps)
        total = min(total, cfg.max_steps)
    opt = optimizer_for(fresh, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total)) if cfg.cosine else None

    # train_loop has no scheduler hook; its per-step callback advances the cosine schedule and never stops the loop
    def step_schedule(_stats) -> bool:
        if sched is not None:
            sched.step()
        return False

    stats = train_loop(fresh, cross_entropy, batches, opt, should_stop=step_schedule)
    return result(fresh, [stats])
