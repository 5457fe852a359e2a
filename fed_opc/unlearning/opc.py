"""One-Point Contraction (OPC): contract the forget samples' representations to the origin while keeping retain CE.

Paper: "One-Point Contraction" unlearning, arXiv 2507.07754. The model is ``m = g . f`` with penultimate features
``f`` and a linear head ``g``; OPC minimises, over retain batches ``B_r`` and forget batches ``B_f`` drawn together at
every step,

    L = mean_{B_r} CE(m(x), y) + lambda * mean_{B_f} ||h(x)||_2     (squared: ||h(x)||_2^2)

with ``h = f`` (``layer: penultimate``) or ``h = m`` (``layer: logits``). Contracted features carry no class
information for a downstream head to read, unlike a model that merely mislabels the forget data.

Defaults (chosen by the CIFAR-10 sweep in ``benchmarks/opc_sweep.py``, see docs/unlearning.md): ``lambda`` 0.3 on the
plain (unsquared) L2 norm of the penultimate features, 1 epoch over the retain set, SGD lr 0.01, momentum 0.9, weight
decay 5e-4, retain batch 128 and forget batch 64. A squared norm or a large ``lambda`` kills every ReLU feature (a
one-class predictor): check ``dead_units_share`` and ``n_predicted_classes`` in the metrics. With batch norm the sweep
found no collapse up to ``lambda`` 3 and a better trade-off at ``lambda`` 1 (docs/unlearning.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from fed_opc.losses import opc_loss
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
    """OPC hyperparameters (YAML block ``unlearning.opc``; ``lambda`` is spelled ``lambda_`` here)."""

    lambda_: float = field(default=0.3, metadata=bounds(gt=0))
    layer: Literal["penultimate", "logits"] = "penultimate"
    squared: bool = False
    epochs: float = field(default=1.0, metadata=bounds(gt=0))
    lr: float = field(default=0.01, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    forget_batch_size: int = field(default=64, metadata=bounds(ge=1))
    max_grad_norm: float | None = field(default=None, metadata=bounds(gt=0))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Run OPC on a copy of ``model``.

    Parameters
    ----------
    model : the model to unlearn from (not modified).
    data : forget and retain index arrays into the training data.
    cfg : hyperparameters.
    generator : shuffles the retain and forget batches.
    device : where to train.

    Returns
    -------
    The contracted model; ``diagnostics`` holds the mean loss of the last steps.

    """
    check_nonempty("opc", data.forget_idx, "forget")
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
    loss = functools.partial(opc_loss, lambda_=cfg.lambda_, layer=cfg.layer, squared=cfg.squared)
    opt = optimizer_for(student, cfg.lr, cfg.momentum, cfg.weight_decay)
    stats = train_loop(student, loss, batches, opt, max_grad_norm=cfg.max_grad_norm)
    return result(student, [stats])
