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


def small_cnn(in_channels: int, norm: str = "none", width: int = 0) -> tuple[nn.Module, int]:
    """Three 3x3 conv stages (w, 2w, 4w channels; default w = 32), ReLU, 2x2 max-pool after the first two, then a
    global average pool. Returns the feature extractor and its output dimension (4w).
    """
    w = width or 32

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
        ]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    body = nn.Sequential(
        *block(in_channels, w, True),
        *block(w, 2 * w, True),
        *block(2 * w, 4 * w, False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return body, 4 * w
