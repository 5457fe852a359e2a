"""What every centralized unlearning method takes and returns, and the few helpers they share.

A method is ``unlearn(model, data, cfg, *, generator, device) -> UnlearnResult``: it deep-copies ``model`` (the input is
never changed), runs :func:`fed_opc.train.train_loop` with its own loss and batch stream, and returns the new model with
the number of optimisation steps and samples it processed. Every random choice draws from ``generator`` (a
``numpy.random.Generator``) or from torch generators derived from it with :func:`torch_generator`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fed_opc.data.datasets import ArrayDataset
from fed_opc.data.forget import GuardedDataset
from fed_opc.losses import random_other_labels
from fed_opc.models import FeatureModel, init_weights
from fed_opc.train import Batch, LoopStats, OptimConfig, limit, make_optimizer, paired_batches


@dataclass(frozen=True, eq=False)
class UnlearnData:
    """The training data an unlearning method may use.

    Attributes
    ----------
    train : the training arrays. A ``GuardedDataset`` that forbids ``forget_idx`` proves that a method which should not
        see the forget set (retrain, finetune) never reads it; methods that use forget samples read them through
        :attr:`forget_source`, the explicit ``allow_forget`` view.
    forget_idx : indices into ``train`` to forget.
    retain_idx : indices into ``train`` the model keeps (may be a subsample of everything else).

    """

    train: ArrayDataset | GuardedDataset
    forget_idx: np.ndarray
    retain_idx: np.ndarray

    def __post_init__(self) -> None:
        f = np.asarray(self.forget_idx, dtype=np.int64)
        r = np.asarray(self.retain_idx, dtype=np.int64)
        if len(np.intersect1d(f, r)):
            raise ValueError("forget_idx and retain_idx overlap")
        object.__setattr__(self, "forget_idx", f)
        object.__setattr__(self, "retain_idx", r)

    @property
    def num_classes(self) -> int:
        """Number of classes of the training data."""
        return self.train.num_classes

    @property
    def forget_source(self) -> ArrayDataset:
        """The dataset to read forget samples from (the guard's explicit exception for the unlearning itself)."""
        return self.train.allow_forget() if isinstance(self.train, GuardedDataset) else self.train


@dataclass
class UnlearnResult:
    """An unlearned model, what the method reports about its run, and its cost in steps and samples."""

    model: FeatureModel
    diagnostics: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    samples: int = 0


def torch_generator(rng: np.random.Generator, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded from ``rng`` (one draw, so later draws of ``rng`` stay independent)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return gen


_INITIALISED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.GroupNorm)


def reinitialized(model: FeatureModel, generator: torch.Generator) -> FeatureModel:
    """A copy of ``model`` with freshly drawn weights, as :func:`fed_opc.models.build_model` would draw them.

    The architecture (arch, width, normalisation) is the copied model's own, so a retrained or randomly initialised
    model needs no separate description of it. Batch-norm running statistics are reset. Raises ``TypeError`` if the
    model holds a parameter that :func:`fed_opc.models.init_weights` would not redraw, rather than keep it silently.
    """
    fresh = copy.deepcopy(model).cpu()
    for name, module in fresh.named_modules():
        own = list(module.parameters(recurse=False))
        if own and not isinstance(module, _INITIALISED):
            raise TypeError(f"cannot re-initialise parameters of {name or 'model'} ({type(module).__name__})")
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    init_weights(fresh, generator)
    return fresh


def working_copy(model: FeatureModel, device: torch.device | str) -> FeatureModel:
    """A deep copy of ``model`` on ``device``; the caller's model is never modified."""
    return copy.deepcopy(model).to(device)


def optimizer_for(
    model: nn.Module, lr: float, momentum: float, weight_decay: float, optimizer: str = "sgd"
) -> torch.optim.Optimizer:
    """An optimiser over all of ``model``'s parameters."""
    return make_optimizer(
        model.parameters(), OptimConfig(lr=lr, momentum=momentum, weight_decay=weight_decay, optimizer=optimizer)
    )


def with_random_labels(batches: Iterable[Batch], num_classes: int, generator: torch.Generator) -> Iterator[Batch]:
    """Add ``y_random`` (a random class other than the true one) to each batch's forget samples."""
    for batch in batches:
        yield batch | {"y_random": random_other_labels(batch["y_forget"], num_classes, generator)}


def result(model: FeatureModel, stats: Iterable[LoopStats], **diagnostics: Any) -> UnlearnResult:
    """Bundle a model and the loop statistics of every ``train_loop`` call that produced it."""
    stats = list(stats)
    steps = sum(s.steps for s in stats)
    samples = sum(s.samples for s in stats)
    losses = [x for s in stats for x in s.losses]
    diag: dict[str, Any] = {"steps": steps}
    if losses:
        diag["final_loss"] = float(np.mean(losses[-10:]))
    return UnlearnResult(model=model, diagnostics=diag | diagnostics, steps=steps, samples=samples)


def check_nonempty(name: str, idx: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` if a method that needs ``what`` samples gets none."""
    if len(idx) == 0:
        raise ValueError(f"{name} needs {what} samples, got none")


def paired_stream(
    data: UnlearnData,
    *,
    batch_size: int,
    forget_batch_size: int,
    epochs: float,
    generator: np.random.Generator,
    device: torch.device | str,
    max_steps: int | None = None,
    retain_idx: np.ndarray | None = None,
) -> Iterator[Batch]:
    """Retain batches (an epoch is a pass over ``retain_idx``, default all of ``data.retain_idx``) with forget batches
    drawn alongside, cut at ``max_steps``; see :func:`fed_opc.train.paired_batches`.
    """
    batches = paired_batches(
        data.train,
        data.retain_idx if retain_idx is None else retain_idx,
        data.forget_source,
        data.forget_idx,
        batch_size=batch_size,
        forget_batch_size=forget_batch_size,
        epochs=epochs,
        rng=generator,
        device=device,
    )
    return batches if max_steps is None else limit(batches, max_steps)
