"""CIFAR VGG with BatchNorm. Stages are separated by pooling; site names are
``layer{s}.{i}.relu``. Pooling is average pooling by default: max pooling needs
k*k-1 secure comparisons per output, which the profile counts as ``maxpool_comparisons``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from pi_opt.models._registry import register_model

VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512),
)


class ConvBNReLU(nn.Module):
    """conv3x3 (stride 1, padding 1, no bias) - BN - ReLU: ``[N, cin, H, W]`` -> ``[N, cout, H, W]``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``[N, cin, H, W]`` -> ``[N, cout, H, W]``."""
        return self.relu(self.bn(self.conv(x)))


class VGG(nn.Module):
    """VGG-style network: per stage, ConvBNReLU units of the given widths then a 2x2 pool
    (``avg`` or ``max``); then global average pool and a linear classifier.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        stages: Sequence[Sequence[int]],
        pool: Literal["avg", "max"],
    ) -> None:
        super().__init__()
        cin = in_channels
        self.stage_names: list[str] = []
        for s, widths in enumerate(stages, start=1):
            units: list[nn.Module] = []
            for w in widths:
                units.append(ConvBNReLU(cin, w))
                cin = w
            setattr(self, f"layer{s}", nn.Sequential(*units))
            setattr(self, f"pool{s}", nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
            self.stage_names.append(f"layer{s}")
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``[N, in_channels, H, W]`` -> logits ``[N, num_classes]``."""
        for s, name in enumerate(self.stage_names, start=1):
            x = getattr(self, f"pool{s}")(getattr(self, name)(x))
        return self.fc(torch.flatten(self.head_pool(x), 1))


@register_model("vgg16")
def vgg16(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    width_mult: float = 1.0,
    pool: Literal["avg", "max"] = "avg",
) -> VGG:
    """VGG-16 (13 conv layers) with BN for 32x32 inputs."""
    stages = [[max(1, int(round(w * width_mult))) for w in st] for st in VGG16_STAGES]
    return VGG(in_channels=in_channels, num_classes=num_classes, stages=stages, pool=pool)
