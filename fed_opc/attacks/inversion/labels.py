"""The labels the attack uses: none, given, or inferred from the last-layer bias gradient (iDLG, extended to a
batch).
"""

from __future__ import annotations

import torch
from torch import nn

from fed_opc.attacks.inversion.functional import LABELLED
from fed_opc.attacks.inversion.settings import Config
from fed_opc.attacks.view import ObservedUpdate


def infer_labels(bias_gradient: torch.Tensor, n: int) -> torch.Tensor:
    """Labels of ``n`` samples from the cross-entropy gradient of the last-layer bias (iDLG, extended to a batch).

    For cross-entropy, ``dL/db_c = mean_i (p_ic - [y_i = c])``: negative for the classes in the batch as long as their
    predicted mass is below their count. Every negative entry is a label (the ``n`` most negative if there are more);
    with fewer than ``n``, the remaining labels go one at a time to the class whose share of the negative mass is
    furthest above its count so far (a class's share estimates its count when predictions are spread thin).
    """
    g = bias_gradient.detach().double().cpu()
    neg = torch.nonzero(g < 0).flatten()
    if len(neg) == 0:
        neg = g.argmin().view(1)
    neg = neg[torch.argsort(g[neg])]  # most negative first
    if len(neg) >= n:
        return neg[:n].clone()
    mass = -g[neg].clamp_max(0)
    ideal = n * mass / mass.sum() if mass.sum() > 0 else torch.full((len(neg),), n / len(neg), dtype=torch.float64)
    counts = torch.ones(len(neg), dtype=torch.float64)
    for _ in range(n - len(neg)):
        counts[int(torch.argmax(ideal - counts))] += 1
    return torch.repeat_interleave(neg, counts.long())


def _bias_name(model: nn.Module) -> str:
    for n, p in model.named_parameters():
        if p is model.head.bias:
            return n
    raise ValueError("the model's head has no bias; iDLG label inference needs one")


def _ce_bias_gradient(obs: ObservedUpdate, name: str, loss: str) -> torch.Tensor:
    """The direction of the cross-entropy gradient of the head bias carried by an observation."""
    g = obs.target[name] if obs.kind == "gradient" else -obs.target[name]  # an SGD update is minus lr times gradients
    return -g if loss == "ascent" else g


def _labels(obs: ObservedUpdate, net: nn.Module, cfg: Config, loss_name: str) -> torch.Tensor:
    """The labels the attack uses for ``obs``: none needed, given (public), or inferred from the head-bias gradient."""
    n = obs.num_images
    if loss_name not in LABELLED:
        return torch.zeros(n, dtype=torch.long)
    if cfg.labels == "given":
        if obs.labels is None:
            raise ValueError("labels='given' but the observation carries no labels")
        return obs.labels.detach().cpu().long()
    return infer_labels(_ce_bias_gradient(obs, _bias_name(net), loss_name), n)
