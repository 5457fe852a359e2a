"""The CNN of McMahan et al. (2017), "Communication-Efficient Learning of Deep Networks from Decentralized Data"."""

from __future__ import annotations

from torch import nn

from fed_opc.models.small_cnn import norm_layer


def fedavg_cnn(in_channels: int, norm: str = "none", width: int = 0) -> tuple[nn.Module, int]:
    """Two 5x5 convolutions (w and 2w channels; default w = 32, as in the paper), each followed by ReLU and a 2x2
    max-pool, then a fully connected layer of 16w units (512 by default) with ReLU, whose output is the feature vector.

    On 28 x 28 inputs (MNIST) this is the paper's network exactly (1.66 M parameters with its 10-way head). Other input
    sizes are average-pooled to the same 7 x 7 grid before the fully connected layer (CIFAR-10: 8 x 8 -> 7 x 7), so the
    network has the same parameters whatever the image size. Returns the feature extractor and its dimension (16w).
    """
    w = width or 32

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 5, padding=2, bias=norm == "none"),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    body = nn.Sequential(
        *block(in_channels, w),
        *block(w, 2 * w),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(2 * w * 49, 16 * w),
        nn.ReLU(inplace=True),
    )
    return body, 16 * w
