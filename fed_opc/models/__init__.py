"""Models that expose ``features(x)`` (the penultimate layer's output, after a ReLU) and a linear ``head`` with bias.

``forward(x) == head(features(x))`` for every model, which is what OPC contracts (``features``) and what the
recovery attacks read. Weights are initialised from an explicit ``torch.Generator``, never from the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fed_opc.models.fedavg_cnn import fedavg_cnn
from fed_opc.models.resnet import resnet18
from fed_opc.models.small_cnn import cnn4, small_cnn
from fed_opc.rng import torch_rng


class FeatureModel(nn.Module):
    """``body`` maps inputs to penultimate features; ``head`` is the final linear layer."""

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.head = head

    @property
    def feature_dim(self) -> int:
        """Width of the penultimate features (the head's input size)."""
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of inputs ``x``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes): ``head(features(x))``."""
        return self.head(self.body(x))


ARCHS: dict[str, Callable[..., FeatureModel]] = {}
DEFAULT_NORM = {"small_cnn": "none", "cnn4": "none", "fedavg_cnn": "none", "resnet18": "batch"}


def _register(name: str, builder: Callable[..., tuple[nn.Module, int]]) -> None:
    def build(num_classes: int, in_channels: int, norm: str, width: int) -> FeatureModel:
        body, dim = builder(in_channels=in_channels, norm=norm, width=width)
        return FeatureModel(body, nn.Linear(dim, num_classes))

    ARCHS[name] = build


_register("small_cnn", small_cnn)
_register("cnn4", cnn4)
_register("fedavg_cnn", fedavg_cnn)
_register("resnet18", resnet18)


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every parameter from ``generator`` (PyTorch's default schemes, made explicit)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in = m.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return model


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int,
    *,
    generator: torch.Generator,
    norm: str | None = None,
    width: int = 0,
) -> FeatureModel:
    """Build architecture ``arch`` with weights drawn from ``generator``.

    Parameters
    ----------
    arch : one of ``ARCHS`` (``fedavg_cnn``, ``small_cnn``, ``cnn4``, ``resnet18``; docs/models.md says which to use when).
    num_classes, in_channels : from the dataset.
    norm : ``none``, ``batch`` or ``group`` normalisation after each conv; ``None`` takes the architecture's default
        (``DEFAULT_NORM``; ``resnet18`` always uses batch norm).
    width : channels of the first stage; 0 means the architecture's default.

    """
    if arch not in ARCHS:
        raise KeyError(f"unknown model arch {arch!r}; valid: {', '.join(sorted(ARCHS))}")
    return init_weights(ARCHS[arch](num_classes, in_channels, norm or DEFAULT_NORM[arch], width), generator)


def new_model(sc, sd) -> FeatureModel:
    """A model of scenario ``sc``'s architecture for its data ``sd`` (a ``ScenarioData``), initialised from the
    scenario's seeded generator; the driver and every client build the same one, then load the real state.
    """
    train = sd.data.train
    return build_model(
        sc.model.arch,
        train.num_classes,
        train.image_shape[0],
        generator=torch_rng(sc.seed, "model_init"),
        norm=sc.model.norm,
        width=sc.model.width,
    )


__all__ = ["ARCHS", "DEFAULT_NORM", "FeatureModel", "build_model", "init_weights", "new_model"]
