"""Fine-tune on the retain data only, relying on catastrophic forgetting of the forget data.

Baseline "FT" of Golatkar et al. (CVPR 2020) and Warnecke et al. (NDSS 2023), as run in Jia et al. (NeurIPS 2023) and
Fan et al. (ICLR 2024). With a guarded dataset, any read of a forget sample raises.

Defaults: 2 epochs, SGD lr 0.02, momentum 0.9, weight decay 5e-4, batch 128.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fed_opc.losses import cross_entropy
from fed_opc.models import FeatureModel
from fed_opc.schema import bounds
from fed_opc.train import limit, supervised_batches, train_loop
from fed_opc.unlearning.base import UnlearnData, UnlearnResult, check_nonempty, optimizer_for, result, working_copy


@dataclass(frozen=True)
class Config:
    """Fine-tuning hyperparameters (YAML block ``unlearning.finetune``)."""

    epochs: float = field(default=2.0, metadata=bounds(gt=0))
    lr: float = field(default=0.02, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Continue training a copy of ``model`` with cross-entropy on ``data.retain_idx``.

    Parameters
    ----------
    model : the model to unlearn from (not modified).
    data : retain indices (forget samples are never read).
    cfg : hyperparameters.
    generator : shuffles the batches.
    device : where to train.

    """
    check_nonempty("finetune", data.retain_idx, "retain")
    student = working_copy(model, device)
    batches = supervised_batches(data.train, data.retain_idx, cfg.batch_size, cfg.epochs, generator, device)
    if cfg.max_steps is not None:
        batches = limit(batches, cfg.max_steps)
    opt = optimizer_for(student, cfg.lr, cfg.momentum, cfg.weight_decay)
    stats = train_loop(student, cross_entropy, batches, opt)
    return result(student, [stats])
