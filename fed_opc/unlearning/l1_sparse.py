"""l1-sparse fine-tuning: fine-tune on retain data with an L1 penalty on the weights whose weight decays linearly to 0.

Paper: Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS 2023):
``CE(retain) + gamma_t * ||theta||_1`` with ``gamma_t = gamma * (1 - t / T)`` over the run's ``T`` steps, so the
penalty pushes towards a sparse model early and lets accuracy recover late. Forget samples are never read.

Defaults: 2 epochs, ``gamma`` 5e-4, SGD lr 0.02, momentum 0.9, no weight decay (the L1 term regularises), batch 128.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fed_opc.losses import l1_sparse_loss
from fed_opc.models import FeatureModel
from fed_opc.schema import bounds
from fed_opc.train import Batch, limit, supervised_batches, train_loop
from fed_opc.unlearning.base import UnlearnData, UnlearnResult, check_nonempty, optimizer_for, result, working_copy


@dataclass(frozen=True)
class Config:
    """l1-sparse hyperparameters (YAML block ``unlearning.l1_sparse``)."""

    gamma: float = field(default=5e-4, metadata=bounds(ge=0))
    epochs: float = field(default=2.0, metadata=bounds(gt=0))
    lr: float = field(default=0.02, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
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
    """Fine-tune a copy of ``model`` on retain data with a linearly decaying L1 penalty.

    Parameters
    ----------
    model : the model to unlearn from (not modified).
    data : retain indices (forget samples are never read).
    cfg : hyperparameters.
    generator : shuffles the batches.
    device : where to train.

    Returns
    -------
    The model; ``diagnostics["zero_weight_share"]`` is the share of weights with magnitude below 1e-4.

    """
    check_nonempty("l1_sparse", data.retain_idx, "retain")
    student = working_copy(model, device)
    total = -(-int(round(cfg.epochs * len(data.retain_idx))) // cfg.batch_size)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    batches = supervised_batches(data.train, data.retain_idx, cfg.batch_size, cfg.epochs, generator, device)
    if cfg.max_steps is not None:
        batches = limit(batches, cfg.max_steps)
    step = [0]

    def loss(m: nn.Module, batch: Batch) -> torch.Tensor:
        gamma_t = cfg.gamma * max(0.0, 1.0 - step[0] / total)  # linear decay over the run, as in the paper
        step[0] += 1
        return l1_sparse_loss(m, batch, gamma=gamma_t)

    opt = optimizer_for(student, cfg.lr, cfg.momentum, cfg.weight_decay)
    stats = train_loop(student, loss, batches, opt)
    with torch.no_grad():
        flat = torch.cat([p.detach().abs().flatten() for p in student.parameters()])
        zero_share = float((flat < 1e-4).float().mean())
    return result(student, [stats], zero_weight_share=zero_share)
