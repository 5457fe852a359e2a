"""SCRUB: teacher-student distillation that alternates a max step (move away from the teacher on forget data) and a
min step (stay close to the teacher and fit the labels on retain data).

Paper: Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded Machine Unlearning" (NeurIPS 2023). The
teacher is the original model (frozen, eval mode); the student starts as a copy of it. For each of ``epochs`` epochs:
if the epoch is among the first ``max_epochs``, one pass over the forget data minimising ``-KL(teacher || student)``;
then one pass over the retain data minimising ``gamma * CE + alpha * KL(teacher || student)``. Each phase is one call of
the training loop with its own loss, sharing one optimiser as in the paper's code.

Defaults (the paper's CIFAR settings, except the learning rate, raised for briefly trained models): 3 epochs, 2 of them
with a max step, temperature 4, ``alpha`` 0.001, ``gamma`` 0.99, SGD lr 0.005, momentum 0.9, weight decay 5e-4, retain
batch 128, forget batch 64, gradient norm clipped to 5.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from fed_opc.losses import scrub_max_loss, scrub_min_loss
from fed_opc.models import FeatureModel
from fed_opc.schema import ConfigError, bounds
from fed_opc.train import LoopStats, index_batches, limit, supervised_batches, train_loop
from fed_opc.unlearning.base import UnlearnData, UnlearnResult, check_nonempty, optimizer_for, result, working_copy


@dataclass(frozen=True)
class Config:
    """SCRUB hyperparameters (YAML block ``unlearning.scrub``)."""

    epochs: int = field(default=3, metadata=bounds(ge=1))
    max_epochs: int = field(default=2, metadata=bounds(ge=0))
    temperature: float = field(default=4.0, metadata=bounds(gt=0))
    alpha: float = field(default=0.001, metadata=bounds(ge=0))
    gamma: float = field(default=0.99, metadata=bounds(ge=0))
    lr: float = field(default=0.005, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    forget_batch_size: int = field(default=64, metadata=bounds(ge=1))
    max_grad_norm: float | None = field(default=5.0, metadata=bounds(gt=0))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))

    def __post_init__(self) -> None:
        if self.max_epochs > self.epochs:
            raise ConfigError("max_epochs", f"expected at most epochs ({self.epochs}), got {self.max_epochs}")


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Run SCRUB on a copy of ``model`` (the original is the teacher).

    Parameters
    ----------
    model : the teacher and the student's starting point (not modified).
    data : forget and retain indices.
    cfg : hyperparameters; ``max_steps`` caps the steps of the whole run.
    generator : shuffles the batches.
    device : where to train.

    Returns
    -------
    The student; ``diagnostics`` holds the mean loss of the last max and min phases.

    """
    check_nonempty("scrub", data.forget_idx, "forget")
    check_nonempty("scrub", data.retain_idx, "retain")
    teacher = copy.deepcopy(model).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = working_copy(model, device)
    opt = optimizer_for(student, cfg.lr, cfg.momentum, cfg.weight_decay)
    max_loss = functools.partial(scrub_max_loss, teacher=teacher, temperature=cfg.temperature)
    min_loss = functools.partial(
        scrub_min_loss, teacher=teacher, temperature=cfg.temperature, alpha=cfg.alpha, gamma=cfg.gamma
    )
    source = data.forget_source

    def forget_batches():
        for idx in index_batches(data.forget_idx, cfg.forget_batch_size, 1.0, generator):
            x, y = source.tensors(idx, device)
            yield {"x_forget": x, "y_forget": y}

    all_stats: list[LoopStats] = []

    def capped(stream):
        # max_steps caps the whole run, across phases
        return stream if cfg.max_steps is None else limit(stream, cfg.max_steps - sum(s.steps for s in all_stats))

    diag: dict[str, float] = {}
    for epoch in range(cfg.epochs):
        if cfg.max_steps is not None and sum(s.steps for s in all_stats) >= cfg.max_steps:
            break
        if epoch < cfg.max_epochs:
            s = train_loop(student, max_loss, capped(forget_batches()), opt, max_grad_norm=cfg.max_grad_norm)
            all_stats.append(s)
            if s.steps:
                diag["max_phase_loss"] = s.mean_loss
        retain = supervised_batches(data.train, data.retain_idx, cfg.batch_size, 1.0, generator, device)
        s = train_loop(student, min_loss, capped(retain), opt, max_grad_norm=cfg.max_grad_norm)
        all_stats.append(s)
        if s.steps:
            diag["min_phase_loss"] = s.mean_loss
    return result(student, all_stats, **diag)
