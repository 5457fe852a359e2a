"""The functional model shared by the simulated client and the attack: the losses a forget batch can enter an
observation through, a FeatureModel's forward pass and gradient with given parameters, and batch-norm statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

# ---------------------------------------------------------------------------------------------------------------------
# losses a forget batch can enter an observation through: (features, logits, labels) -> scalar


def _norm_term(h: torch.Tensor, squared: bool) -> torch.Tensor:
    sq = h.pow(2).sum(1)
    return sq.mean() if squared else sq.clamp_min(1e-30).sqrt().mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": lambda f, z, y: F.cross_entropy(z, y),
    "ascent": lambda f, z, y: -F.cross_entropy(z, y),
    "feature_norm": lambda f, z, y: _norm_term(f, False),
    "feature_norm_sq": lambda f, z, y: _norm_term(f, True),
    "logit_norm": lambda f, z, y: _norm_term(z, False),
    "logit_norm_sq": lambda f, z, y: _norm_term(z, True),
}
# Losses that read labels; for the others (OPC's contraction terms) labels are neither needed nor inferable.
LABELLED = frozenset({"ce", "ascent"})


def _loss(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in LOSSES:
        raise KeyError(f"unknown inversion loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


# ---------------------------------------------------------------------------------------------------------------------
# the functional model


def _parts(model: nn.Module) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    odd = [n for n in names if not n.startswith(("body.", "head."))]
    if odd:
        raise ValueError(f"inversion needs a FeatureModel (parameters under body. and head.), found {odd[:3]}")
    return names


def _forward(
    model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of a FeatureModel with the given parameters (and buffers, for batch norm in train mode)."""

    def sub(prefix: str, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in d.items() if k.startswith(prefix)}

    f = functional_call(model.body, sub("body.", params) | sub("body.", buffers), (x,))
    return f, functional_call(model.head, sub("head.", params), (f,))


def _chunk(step: int, n: int, batch_size: int | None, device: torch.device | str) -> torch.Tensor:
    """Positions used by local step ``step``: consecutive chunks of ``batch_size``, cycling over the ``n`` samples."""
    bs = n if batch_size is None else min(batch_size, n)
    return (step * bs + torch.arange(bs, device=device)) % n


def _gradient(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    loss: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    create_graph: bool,
) -> list[torch.Tensor]:
    f, z = _forward(model, params, buffers, x)
    grads = torch.autograd.grad(loss(f, z, y), list(params.values()), create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]


# ---------------------------------------------------------------------------------------------------------------------
# model states and batch-norm statistics


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


BN_MEAN, BN_VAR = ".batch_mean", ".batch_var"
"""Suffixes of the observation entries holding a batch-norm layer's batch statistics (``<module name>`` + suffix)."""


def _bn_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _BNCapture:
    """Collects, during a forward pass, the per-channel mean and (biased) variance of every batch-norm layer's input
    over the batch and the spatial positions, in forward order.
    """

    def __init__(self, model: nn.Module) -> None:
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        mods = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.hooks = [m.register_forward_pre_hook(self._hook) for m in mods]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        h = inputs[0]
        dims = [0] + list(range(2, h.ndim))
        self.stats.append((h.mean(dim=dims), h.var(dim=dims, unbiased=False)))

    def take(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out, self.stats = self.stats, []
        return out

    def close(self) -> None:
        for h in self.hooks:
            h.remove()
