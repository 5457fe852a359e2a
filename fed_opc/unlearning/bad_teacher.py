"""Bad Teacher: distil from a competent teacher on retain data and from an incompetent (random) teacher on forget data.

Paper: Chundawat, Tarun, Mandal and Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks
Using an Incompetent Teacher" (AAAI 2023). The competent teacher is the original model; the incompetent teacher is the
same architecture with freshly drawn random weights; the student starts as a copy of the original. A subset of the
retain data (``retain_fraction``) and all forget data are mixed; each sample's target is its teacher's softened output,
and the student minimises the KL divergence to it.

Defaults (the paper's): 1 epoch, Adam lr 1e-4, temperature 1, 30% of the retain data. Retain batches of 128 with forget
batches sized in proportion to the forget / retain-subset ratio (at least 1), so each batch mirrors the mixed set.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from fed_opc.losses import bad_teacher_loss
from fed_opc.models import FeatureModel
from fed_opc.schema import bounds
from fed_opc.train import train_loop
from fed_opc.unlearning.base import (
    UnlearnData,
    UnlearnResult,
    check_nonempty,
    optimizer_for,
    paired_stream,
    reinitialized,
    result,
    torch_generator,
    working_copy,
)


@dataclass(frozen=True)
class Config:
    """Bad-teacher hyperparameters (YAML block ``unlearning.bad_teacher``)."""

    epochs: float = field(default=1.0, metadata=bounds(gt=0))
    lr: float = field(default=1e-4, metadata=bounds(gt=0))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
    temperature: float = field(default=1.0, metadata=bounds(gt=0))
    retain_fraction: float = field(default=0.3, metadata=bounds(gt=0, le=1))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    forget_batch_size: int | None = field(default=None, metadata=bounds(ge=1))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Run bad-teacher distillation on a copy of ``model``.

    Parameters
    ----------
    model : the competent teacher and the student's starting point (not modified).
    data : forget and retain indices.
    cfg : hyperparameters.
    generator : the incompetent teacher's weights, the retain subset and the batch order.
    device : where to train.

    """
    check_nonempty("bad_teacher", data.forget_idx, "forget")
    check_nonempty("bad_teacher", data.retain_idx, "retain")
    competent = working_copy(model, device).eval()
    incompetent = reinitialized(model, torch_generator(generator)).to(device).eval()
    for teacher in (competent, incompetent):
        for p in teacher.parameters():
            p.requires_grad_(False)
    student = working_copy(model, device)
    n_sub = max(1, int(round(cfg.retain_fraction * len(data.retain_idx))))
    retain_sub = np.sort(generator.choice(data.retain_idx, size=n_sub, replace=False))
    fbs = cfg.forget_batch_size or max(1, int(round(cfg.batch_size * len(data.forget_idx) / n_sub)))
    batches = paired_stream(
        data,
        batch_size=cfg.batch_size,
        forget_batch_size=fbs,
        epochs=cfg.epochs,
        generator=generator,
        device=device,
        max_steps=cfg.max_steps,
        retain_idx=retain_sub,
    )
    opt = optimizer_for(student, cfg.lr, 0.0, cfg.weight_decay, optimizer="adam")
    loss = functools.partial(
        bad_teacher_loss, competent=competent, incompetent=incompetent, temperature=cfg.temperature
    )
    stats = train_loop(student, loss, batches, opt)
    return result(student, [stats], forget_batch_size=fbs, retain_subset=n_sub)
