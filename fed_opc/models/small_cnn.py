"""A small convolutional network with global average pooling, sized for CPU simulation of many clients."""

from __future__ import annotations

from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The normalisation after a convolution: ``none`` (identity), ``batch`` or ``group`` (8 groups, fewer when narrower)."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; valid: none, batch, group")


def conv_block(cin: int, cout: int, norm: str) -> list[nn.Module]:
    """A 3x3 convolution (bias only without normalisation), the ``norm`` layer and a ReLU."""
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"), norm_layer(norm, cout), nn.ReLU(inplace=True)]


def conv_stack(in_channels: int, norm: str, width: int, stages: int) -> tuple[nn.Module, int]:
    """``stages`` 3x3 conv stages of w, 2w, 4w, ... channels (conv, ``norm``, ReLU), a 2x2 max-pool after every stage
    but the last, then a global average pool. Returns the feature extractor and its output dimension.
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for i in range(stages):
        cout = width * 2**i
        layers += conv_block(cin, cout, norm)
        if i < stages - 1:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), cin


def small_cnn(in_channels: int, norm: str = "none", width: int = 0) -> tuple[nn.Module, int]:
    """Three 3x3 conv stages (w, 2w, 4w channels; default w = 32), ReLU, 2x2 max-pool after the first two, then a
    global average pool. Returns the feature extractor and its output dimension (4w).
    """
    return conv_stack(in_channels, norm, width or 32, 3)


def cnn4(in_channels: int, norm: str = "none", width: int = 0) -> tuple[nn.Module, int]:
    """``small_cnn`` with a fourth stage: 3x3 conv stages of w, 2w, 4w, 8w channels (default w = 32), a 2x2 max-pool
    after the first three, then a global average pool. Returns the feature extractor and its output dimension (8w).
    """
    return conv_stack(in_channels, norm, width or 32, 4)
