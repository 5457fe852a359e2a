"""Pure loss functions of ``(model, batch)`` for the training loop, and the tensor terms they are built from.

A batch is a dict of tensors (see :mod:`fed_opc.train`): ``x``/``y`` for retain (or ordinary training) samples and
``x_forget``/``y_forget`` for forget samples. Terms that act on a tensor (the OPC contraction, a distillation KL) take
that tensor, so they can be checked on hand-made numbers and reused by the federated strategies. Losses that need a
model-shaped argument beyond the batch (a teacher, a weight) take it as a keyword and are bound with
``functools.partial`` by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fed_opc.train import Batch

Layer = Literal["penultimate", "logits"]
LAYERS: tuple[str, ...] = ("penultimate", "logits")


def cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the model on ``batch["x"]``, ``batch["y"]``."""
    return F.cross_entropy(model(batch["x"]), batch["y"])


# ---------------------------------------------------------------------------------------------------------------------
# One-Point Contraction


def opc_forget_term(h: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """OPC's contraction term: the mean over rows of ``||h_i||_2`` (``squared``: of ``||h_i||_2^2``).

    Parameters
    ----------
    h : (B, D) representations of forget samples (penultimate features or logits).
    squared : use the squared norm, whose gradient ``2 h`` vanishes as ``h -> 0`` (the plain norm's gradient has unit
        length everywhere except at 0, where torch defines it as 0).

    Returns
    -------
    A scalar tensor; 0 for an empty batch.

    """
    if h.shape[0] == 0:
        return h.sum() * 0.0
    sq = h.pow(2).sum(dim=1)
    return sq.mean() if squared else torch.linalg.vector_norm(h, dim=1).mean()


def representation(model: nn.Module, x: torch.Tensor, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, logits)`` of a ``FeatureModel`` in one forward pass; ``h`` is the features or the logits per ``layer``."""
    feats = model.features(x)
    logits = model.head(feats)
    if layer == "penultimate":
        return feats, logits
    if layer == "logits":
        return logits, logits
    raise ValueError(f"unknown OPC layer {layer!r}; valid: {', '.join(LAYERS)}")


def opc_loss(
    model: nn.Module,
    batch: Batch,
    *,
    lambda_: float,
    layer: Layer = "penultimate",
    squared: bool = False,
    ce_weight: float = 1.0,
) -> torch.Tensor:
    """OPC's objective: mean CE on retain samples plus ``lambda_`` times the contraction term on forget samples.

    ``L = ce_weight * mean_{B_r} CE(m(x), y) + lambda * mean_{B_f} ||h(x)||`` (arXiv 2507.07754; ``ce_weight`` 1
    except where federated OPC weighs a client's share of the global objective). Retain and forget samples go
    through the network in one concatenated forward pass, so a model with batch norm normalises both with the same
    batch statistics, as it will at evaluation time where one set of running statistics serves all inputs. Either part
    may be missing from the batch (a whole-client deletion has no retain data on the client).
    """
    has_retain, has_forget = "x" in batch, "x_forget" in batch
    if not (has_retain or has_forget):
        raise KeyError("opc_loss needs x (retain) and/or x_forget (forget) in the batch")
    parts = ([batch["x"]] if has_retain else []) + ([batch["x_forget"]] if has_forget else [])
    h, logits = representation(model, torch.cat(parts) if len(parts) > 1 else parts[0], layer)
    n_r = batch["x"].shape[0] if has_retain else 0
    loss = F.cross_entropy(logits[:n_r], batch["y"]) if has_retain else logits.sum() * 0.0
    if ce_weight != 1.0:
        loss = ce_weight * loss
    if has_forget:
        loss = loss + lambda_ * opc_forget_term(h[n_r:], squared)
    return loss


# ---------------------------------------------------------------------------------------------------------------------
# gradient ascent and random labels


def forget_cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy on ``x_forget``/``y_forget``."""
    return F.cross_entropy(model(batch["x_forget"]), batch["y_forget"])


def gradient_ascent(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The negated forget cross-entropy: minimising it ascends the forget loss."""
    return -forget_cross_entropy(model, batch)


def neggrad_plus(model: nn.Module, batch: Batch, *, alpha: float) -> torch.Tensor:
    """NegGrad+: ``alpha * CE(retain) - (1 - alpha) * CE(forget)`` (Kurmanji et al., NeurIPS 2023)."""
    return alpha * cross_entropy(model, batch) - (1.0 - alpha) * forget_cross_entropy(model, batch)


def random_label_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean CE of forget samples against the random labels ``y_random`` drawn for them, plus retain CE if present.

    The two terms are averaged over all samples of the batch, as if retain and relabelled forget samples were one set.
    """
    parts_x = [batch["x_forget"]] + ([batch["x"]] if "x" in batch else [])
    parts_y = [batch["y_random"]] + ([batch["y"]] if "y" in batch else [])
    return F.cross_entropy(model(torch.cat(parts_x)), torch.cat(parts_y))


def random_other_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label, a uniformly random *different* class (labels stay on their device)."""
    if num_classes < 2:
        raise ValueError(f"random relabelling needs at least 2 classes, got {num_classes}")
    shift = torch.randint(1, num_classes, labels.shape, generator=generator, device=generator.device)
    return (labels + shift.to(labels.device)) % num_classes


# ---------------------------------------------------------------------------------------------------------------------
# sparsity


def l1_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum of absolute values of all given parameters."""
    terms = [p.abs().sum() for p in params]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def l1_sparse_loss(model: nn.Module, batch: Batch, *, gamma: float) -> torch.Tensor:
    """Retain CE plus ``gamma * ||theta||_1`` over every model parameter (Jia et al., NeurIPS 2023)."""
    ce = cross_entropy(model, batch)
    if gamma == 0.0:
        return ce
    return ce + gamma * l1_norm(model.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# distillation


def distill_kl(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(target || softmax(student / T))`` averaged over the batch and scaled by ``T^2`` (Hinton et al., 2015).

    ``target_probs`` are probabilities (already softened by the caller if wanted); rows sum to 1.
    """
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_q, target_probs, reduction="batchmean") * temperature**2


def soft_targets(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)`` with no gradient (a teacher's targets)."""
    return F.softmax(logits.detach() / temperature, dim=1)


def scrub_max_loss(model: nn.Module, batch: Batch, *, teacher: nn.Module, temperature: float) -> torch.Tensor:
    """SCRUB's max step: the negated KL from the teacher on forget samples (the student moves away from it)."""
    with torch.no_grad():
        target = soft_targets(teacher(batch["x_forget"]), temperature)
    return -distill_kl(model(batch["x_forget"]), target, temperature)


def scrub_min_loss(
    model: nn.Module, batch: Batch, *, teacher: nn.Module, temperature: float, alpha: float, gamma: float
) -> torch.Tensor:
    """SCRUB's min step on retain samples: ``gamma * CE + alpha * KL(teacher || student)``."""
    logits = model(batch["x"])
    with torch.no_grad():
        target = soft_targets(teacher(batch["x"]), temperature)
    return gamma * F.cross_entropy(logits, batch["y"]) + alpha * distill_kl(logits, target, temperature)


def bad_teacher_loss(
    model: nn.Module, batch: Batch, *, competent: nn.Module, incompetent: nn.Module, temperature: float
) -> torch.Tensor:
    """Bad-teacher distillation: retain samples follow the competent teacher, forget samples the incompetent one.

    The KL is averaged over all samples of the batch, retain and forget together (Chundawat et al., AAAI 2023).
    """
    parts_x, targets = [], []
    with torch.no_grad():
        if "x" in batch:
            parts_x.append(batch["x"])
            targets.append(soft_targets(competent(batch["x"]), temperature))
        parts_x.append(batch["x_forget"])
        targets.append(soft_targets(incompetent(batch["x_forget"]), temperature))
    return distill_kl(model(torch.cat(parts_x)), torch.cat(targets), temperature)
