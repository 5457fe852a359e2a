"""NegGrad+: descend the retain loss while ascending the forget loss, weighted by ``alpha``.

Paper: Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded Machine Unlearning" (NeurIPS 2023), which
introduces SCRUB and this strengthened negative-gradient baseline: ``alpha * CE(B_r) - (1 - alpha) * CE(B_f)`` with
retain and forget batches drawn together.

Defaults: 1 epoch over the retain data, ``alpha`` 0.999, retain batch 128 and forget batch 64, SGD lr 0.01, momentum
0.9, weight decay 5e-4, gradient norm clipped to 5. The forget term is unbounded: on the CIFAR-10 small CNN (class 0,
one epoch) ``alpha`` 0.95 and 0.99 ran away (feature norms 1e3 to 1e5, retain accuracy 11-18%); 0.999 forgot the
class and kept retain accuracy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from fed_opc.losses import neggrad_plus
from fed_opc.models import FeatureModel
from fed_opc.schema import bounds
from fed_opc.train import train_loop
from fed_opc.unlearning.base import (
    UnlearnData,
    UnlearnResult,
    check_nonempty,
    optimizer_for,
    paired_stream,
    result,
    working_copy,
)


@dataclass(frozen=True)
class Config:
    """NegGrad+ hyperparameters (YAML block ``unlearning.neggrad_plus``)."""

    alpha: float = field(default=0.999, metadata=bounds(gt=0, lt=1))
    epochs: float = field(default=1.0, metadata=bounds(gt=0))
    lr: float = field(default=0.01, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    forget_batch_size: int = field(default=64, metadata=bounds(ge=1))
    max_grad_norm: float | None = field(default=5.0, metadata=bounds(gt=0))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Run NegGrad+ on a copy of ``model``.

    Parameters
    ----------
    model : the model to unlearn from (not modified).
    data : forget and retain indices (both are needed).
    cfg : hyperparameters.
    generator : shuffles the batches.
    device : where to train.

    """
    check_nonempty("neggrad_plus", data.forget_idx, "forget")
    check_nonempty("neggrad_plus", data.retain_idx, "retain")
    student = working_copy(model, device)
    batches = paired_stream(
        data,
        batch_size=cfg.batch_size,
        forget_batch_size=cfg.forget_batch_size,
        epochs=cfg.epochs,
        generator=generator,
        device=device,
        max_steps=cfg.max_steps,
    )
    opt = optimizer_for(student, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss = functools.partial(neggrad_plus, alpha=cfg.alpha)
    stats = train_loop(student, loss, batches, opt, max_grad_norm=cfg.max_grad_norm)
    return result(student, [stats])
