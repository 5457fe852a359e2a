"""Pure loss functions of ``(model, batch)`` for the training loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fed_opc.train import Batch


def cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the model on ``batch["x"]``, ``batch["y"]``."""
    return F.cross_entropy(model(batch["x"]), batch["y"])
