"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss.

Paper: Fan, Liu, Zhang, Wei, Wong and Liu, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
Both Image Classification and Generation" (ICLR 2024). The saliency of a weight is the magnitude of the forget
cross-entropy's gradient with respect to it, summed over the forget samples (model in eval mode); the mask keeps the
``mask_ratio`` share of weights with the largest saliency (one global threshold over all parameters). Then random-label
unlearning (see :mod:`fed_opc.unlearning.rl`) runs with every gradient multiplied by the mask, so weights outside it
do not move.

Defaults: mask ratio 0.5 (the paper's 50% threshold), saliency over at most 5,000 forget samples, then 1 epoch over
the retain data with forget batches of 32 beside retain batches of 128, SGD lr 0.01, momentum 0.9 and no weight decay
(weight decay would move the masked-out weights too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
    """SalUn hyperparameters (YAML block ``unlearning.salun``)."""

    mask_ratio: float = field(default=0.5, metadata=bounds(gt=0, le=1))
    saliency_samples: int = field(default=5000, metadata=bounds(ge=1))
    epochs: float = field(default=1.0, metadata=bounds(gt=0))
    lr: float = field(default=0.01, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
    batch_size: int = field(default=128, metadata=bounds(ge=1))
    forget_batch_size: int = field(default=32, metadata=bounds(ge=1))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))


def saliency_mask(
    model: nn.Module, data, idx: np.ndarray, ratio: float, *, device: torch.device | str, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Per-parameter 0/1 masks keeping the ``ratio`` share of weights with the largest ``|grad CE(forget)|``.

    Parameters
    ----------
    model : evaluated in eval mode; its parameters are not changed (their ``.grad`` is cleared afterwards).
    data : dataset holding the forget samples.
    idx : forget indices to accumulate the gradient over.
    ratio : share of all weights to keep (ties at the threshold are kept).
    device : where to compute.
    batch_size : forget samples per backward pass.

    """
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for start in range(0, len(idx), batch_size):
        x, y = data.tensors(idx[start : start + batch_size], device)
        F.cross_entropy(model(x), y, reduction="sum").backward()
    grads = {
        n: (p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat([g.flatten() for g in grads.values()])
    k = max(1, int(round(ratio * flat.numel())))
    threshold = torch.topk(flat, k, sorted=False).values.min()
    return {n: (g >= threshold).to(g.dtype) for n, g in grads.items()}


def unlearn(
    model: FeatureModel,
    data: UnlearnData,
    cfg: Config,
    *,
    generator: np.random.Generator,
    device: torch.device | str,
) -> UnlearnResult:
    """Run SalUn on a copy of ``model``.

    Parameters
    ----------
    model : the model to unlearn from (not modified).
    data : forget and retain indices.
    cfg : hyperparameters.
    generator : saliency subsample, batch order and (through a derived torch generator) the random labels.
    device : where to train.

    Returns
    -------
    The model; ``diagnostics["mask_share"]`` is the share of weights the mask lets move.

    """
    check_nonempty("salun", data.forget_idx, "forget")
    student = working_copy(model, device)
    n_sal = min(cfg.saliency_samples, len(data.forget_idx))
    sal_idx = np.sort(generator.choice(data.forget_idx, size=n_sal, replace=False))
    mask = saliency_mask(student, data.forget_source, sal_idx, cfg.mask_ratio, device=device)
    params = dict(student.named_parameters())

    def apply_mask(_model: nn.Module) -> None:
        for name, m in mask.items():
            if params[name].grad is not None:
                params[name].grad.mul_(m)

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
    stats = train_loop(
        student,
        random_label_loss,
        with_random_labels(batches, data.num_classes, labels_gen),
        opt,
        grad_transform=apply_mask,
    )
    total = sum(m.numel() for m in mask.values())
    mask_share = float(sum(m.sum() for m in mask.values()) / total)
    return result(student, [stats], mask_share=mask_share)
