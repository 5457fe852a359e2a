"""The one local training loop, its batch streams and batched inference.

Every trainer in fed-opc (a client's FedAvg epochs, each unlearning method, the attacks' relearning) is this loop with a
different loss function of ``(model, batch)`` and a different stream of batches. Batches are dicts of tensors: ``x``/``y``
for supervised data, plus ``x_forget``/``y_forget`` when forget samples are drawn alongside retain samples.
Shuffling uses an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
GradTransform = Callable[[nn.Module], None]


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser settings: SGD with momentum and weight decay, or Adam."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names (``sgd`` or ``adam``) over ``params``; Adam has no ``momentum``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: sgd, adam")


@dataclass
class LoopStats:
    """What one call of :func:`train_loop` did."""

    steps: int = 0
    samples: int = 0
    losses: list[float] = field(default_factory=list)

    @property
    def mean_loss(self) -> float:
        """Mean loss over the steps taken; NaN when there were none."""
        return float(np.mean(self.losses)) if self.losses else float("nan")


def freeze_batch_norm(model: nn.Module) -> None:
    """Put every batch-norm layer of ``model`` in eval mode (the rest keeps its mode)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_loop(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    grad_transform: GradTransform | None = None,
    max_grad_norm: float | None = None,
    after_step: GradTransform | None = None,
    should_stop: Callable[[LoopStats], bool] | None = None,
    frozen_batch_norm: bool = False,
) -> LoopStats:
    """Run one optimisation step per batch and return what was done.

    Parameters
    ----------
    model : put in train mode for the loop.
    loss_fn : ``loss_fn(model, batch) -> scalar tensor``.
    batches : any iterable of batch dicts; the loop ends when it is exhausted or ``should_stop`` returns True.
    optimizer : built over the parameters to update.
    grad_transform : called after ``backward`` and before the step, to edit ``p.grad`` in place (e.g. a projection).
    max_grad_norm : clip the global gradient norm to this value.
    after_step : called after each optimiser step, to edit the parameters in place (e.g. a projection onto a ball).
    should_stop : checked after every step.
    frozen_batch_norm : keep batch-norm layers in eval mode: they normalise with their running statistics and leave
        them unchanged, so the model trained is the model evaluated (``freeze_batch_norm``).

    """
    model.train()
    if frozen_batch_norm:
        freeze_batch_norm(model)
    stats = LoopStats()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {stats.steps}")
        loss.backward()
        if grad_transform is not None:
            grad_transform(model)
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if after_step is not None:
            with torch.no_grad():
                after_step(model)
        stats.steps += 1
        stats.samples += sum(int(v.shape[0]) for k, v in batch.items() if k.startswith("x"))
        stats.losses.append(float(loss.detach()))
        if should_stop is not None and should_stop(stats):
            break
    return stats


# ---------------------------------------------------------------------------------------------------------------------
# batch streams


def index_batches(
    indices: np.ndarray, batch_size: int, epochs: float, rng: np.random.Generator, drop_last: bool = False
) -> Iterator[np.ndarray]:
    """Shuffled mini-batches of ``indices`` for ``epochs`` passes (a fractional last pass is cut short)."""
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    if n == 0:
        return
    total = int(round(epochs * n))
    done = 0
    while done < total:
        perm = indices[rng.permutation(n)]
        for start in range(0, n, batch_size):
            take = perm[start : start + batch_size][: total - done]
            if len(take) == 0 or (drop_last and len(take) < batch_size):
                break
            yield take
            done += len(take)
            if done >= total:
                return


def supervised_batches(
    data,
    indices: np.ndarray,
    batch_size: int,
    epochs: float,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
) -> Iterator[Batch]:
    """``{"x", "y"}`` batches drawn from ``data`` (an ``ArrayDataset`` or ``GuardedDataset``)."""
    for idx in index_batches(indices, batch_size, epochs, rng):
        x, y = data.tensors(idx, device)
        yield {"x": x, "y": y}


def cycle_batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """An endless stream of full batches of ``indices``: reshuffled passes, joined end to end.

    A batch may straddle two passes, so every batch has ``min(batch_size, len(indices))`` distinct-or-not samples and
    no short batch appears at the end of a pass.
    """
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    size = min(batch_size, n)
    buf = np.zeros(0, dtype=np.int64)
    while True:
        while len(buf) < size:
            buf = np.concatenate([buf, indices[rng.permutation(n)]])
        yield buf[:size]
        buf = buf[size:]


def paired_batches(
    retain_data,
    retain_idx: np.ndarray,
    forget_data,
    forget_idx: np.ndarray,
    *,
    batch_size: int,
    forget_batch_size: int,
    epochs: float,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
) -> Iterator[Batch]:
    """Retain and forget batches drawn together at every step.

    An epoch is a pass over the retain indices, with forget batches cycling alongside; with no retain indices (a
    whole-client deletion on the client itself) an epoch is a pass over the forget indices. Keys: ``x``/``y`` (retain,
    absent when there is none) and ``x_forget``/``y_forget``.
    """
    retain_idx = np.asarray(retain_idx, dtype=np.int64)
    forget_idx = np.asarray(forget_idx, dtype=np.int64)
    if len(retain_idx) == 0:
        for idx in index_batches(forget_idx, forget_batch_size, epochs, rng):
            xf, yf = forget_data.tensors(idx, device)
            yield {"x_forget": xf, "y_forget": yf}
        return
    forget_stream = cycle_batches(forget_idx, forget_batch_size, rng) if len(forget_idx) else None
    for idx in index_batches(retain_idx, batch_size, epochs, rng):
        x, y = retain_data.tensors(idx, device)
        batch = {"x": x, "y": y}
        if forget_stream is not None:
            xf, yf = forget_data.tensors(next(forget_stream), device)
            batch |= {"x_forget": xf, "y_forget": yf}
        yield batch


def limit(batches: Iterable[Batch], steps: int) -> Iterator[Batch]:
    """At most ``steps`` batches of a stream."""
    for i, b in enumerate(batches):
        if i >= steps:
            return
        yield b


# ---------------------------------------------------------------------------------------------------------------------
# inference


@torch.no_grad()
def predict(
    model: nn.Module,
    data,
    indices: np.ndarray,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    what: str = "logits",
) -> torch.Tensor:
    """Logits (``what="logits"``) or penultimate features (``what="features"``) for ``indices``, in eval mode, on CPU."""
    was_training = model.training
    model.eval()
    out = []
    indices = np.asarray(indices, dtype=np.int64)
    for start in range(0, len(indices), batch_size):
        x, _ = data.tensors(indices[start : start + batch_size], device)
        out.append((model.features(x) if what == "features" else model(x)).float().cpu())
    model.train(was_training)
    if not out:
        dim = model.feature_dim if what == "features" else model.head.out_features
        return torch.zeros(0, dim)
    return torch.cat(out)


def accuracy(
    model: nn.Module, data, indices: np.ndarray, *, device: torch.device | str = "cpu", batch_size: int = 512
) -> float:
    """Top-1 accuracy on ``indices`` (nan for an empty set)."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return float("nan")
    pred = predict(model, data, indices, batch_size=batch_size, device=device).argmax(1).numpy()
    return float((pred == data.labels[indices]).mean())
