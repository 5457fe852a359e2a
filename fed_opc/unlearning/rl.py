"""Random labels (RL): fine-tune on forget samples relabelled with random wrong classes, together with retain data.

Baseline "RL" of Hayase et al. (2020) and Golatkar et al. (CVPR 2020), in the form run by Fan et al. (SalUn, ICLR 2024):
cross-entropy over retain samples with their labels and forget samples with a uniformly random *other* class, redrawn
at every step from a generator derived from the method's generator.

Defaults: 1 epoch over the retain data, forget batches of 32 drawn alongside retain batches of 128, SGD lr 0.01,
momentum 0.9, weight decay 5e-4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fed_opc.losses import random_label_loss
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
    torch_generator,
    with_random_labels,
    working_copy,
)


@dataclass(frozen=True)
class Config:
    """Random-label hyperparameters (YAML block ``unlearning.rl``)."""

    epochs: float = field(default=1.0, metadata=bounds(gt=0))
    lr: float = field(default=0.01, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    forget_batch_size: int = field(default=32, metadata=bounds(ge=1))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Train a copy of ``model`` on retain data plus randomly relabelled forget data.

    Parameters
    ----------
    model : the model to unlearn from (not modified).
    data : forget and retain indices.
    cfg : hyperparameters.
    generator : batch order and (through a derived torch generator) the random labels.
    device : where to train.

    """
    check_nonempty("rl", data.forget_idx, "forget")
    student = working_copy(model, device)
    labels_gen = torch_generator(generator)
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
    stats = train_loop(student, random_label_loss, with_random_labels(batches, data.num_classes, labels_gen), opt)
    return result(student, [stats])
