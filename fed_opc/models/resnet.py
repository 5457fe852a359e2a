"""ResNet-18 with the CIFAR stem (He et al., 2016): a 3x3 stride-1 first convolution and no max-pool."""

from __future__ import annotations

from torch import nn


def resnet18(in_channels: int, norm: str = "batch", width: int = 0) -> tuple[nn.Module, int]:
    """Torchvision's ResNet-18 body with the CIFAR stem; returns the feature extractor (to the pooled 512-d vector)."""
    from torchvision.models import resnet18 as tv_resnet18

    if norm != "batch":
        raise ValueError(f"resnet18 supports norm 'batch' only, got {norm!r}")
    if width not in (0, 64):
        raise ValueError(f"resnet18 has a fixed width of 64, got {width}")
    net = tv_resnet18(weights=None, num_classes=10)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512
