"""CIFAR-style ResNets (BasicBlock) as used by SNL, AutoReP, DeepReDuce and HybReNets.

Every activation is its own ``nn.ReLU`` module with a stable dotted name, so ReLU
sites can be addressed by name:

* ``stem_relu``              - after the stem conv (only when ``stem_relu=True``)
* ``layer{s}.{b}.relu1``     - inside block ``b`` of stage ``s`` (1-based stages)
* ``layer{s}.{b}.relu2``     - after the residual addition (DeepReDuce "thinning" drops it)

Counting conventions (CIFAR 32x32 ResNet-18): 491,520 ReLUs without the stem ReLU
(SNL/AutoReP/DeepReDuce), 557,056 with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pi_opt.models._registry import register_model
from pi_opt.models._stages import add_stages


def _scaled(widths: Sequence[int], width_mult: float) -> list[int]:
    return [max(1, int(round(w * width_mult))) for w in widths]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) - ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``[N, cin, H, W]`` -> ``[N, cout, H/stride, W/stride]``."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv3x3 -> stages of BasicBlocks (stride 1, then 2) -> global avg pool -> FC.

    Args:
        in_channels: input image channels.
        num_classes: output logits.
        widths: channels per stage (len = number of stages).
        blocks: blocks per stage.
        stem_relu: put a ReLU after the stem (papers differ; see module doc).
        stem_stride: stride of the stem conv.
        input_downsample: average-pool the input by this factor first
            (DeepReDuce's resolution factor rho = 1 / input_downsample).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        blocks: Sequence[int],
        stem_relu: bool = False,
        stem_stride: int = 1,
        input_downsample: int = 1,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError("widths and blocks must be non-empty and of equal length")
        if input_downsample < 1 or stem_stride < 1:
            raise ValueError("input_downsample and stem_stride must be >= 1")
        self.input_pool: nn.Module = (
            nn.AvgPool2d(input_downsample) if input_downsample > 1 else nn.Identity()
        )
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        self.stem_relu: nn.Module = nn.ReLU() if stem_relu else nn.Identity()
        cin, self.stage_names = add_stages(self, BasicBlock, widths[0], widths, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``[N, C, H, W]`` -> logits ``[N, num_classes]``."""
        x = self.stem_relu(self.stem_bn(self.stem(self.input_pool(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet")
def resnet(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    widths: Sequence[int] = (16, 32, 64),
    blocks: Sequence[int] = (1, 1, 1),
    width_mult: float = 1.0,
    stem_relu: bool = False,
    stem_stride: int = 1,
    input_downsample: int = 1,
) -> ResNet:
    """Generic CIFAR-style ResNet; ``widths`` x ``width_mult`` channels per stage."""
    return ResNet(
        in_channels=in_channels,
        num_classes=num_classes,
        widths=_scaled(widths, width_mult),
        blocks=list(blocks),
        stem_relu=stem_relu,
        stem_stride=stem_stride,
        input_downsample=input_downsample,
    )


@register_model("resnet_mini")
def resnet_mini(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (16, 32, 64),
    blocks: Sequence[int] = (1, 1, 1),
    width_mult: float = 1.0,
    stem_relu: bool = True,
    input_downsample: int = 1,
) -> ResNet:
    """Small 3-stage ResNet that trains in seconds on 8x8 digits (3,584 + 1,024 stem ReLUs)."""
    return resnet(
        in_channels=in_channels,
        num_classes=num_classes,
        widths=widths,
        blocks=blocks,
        width_mult=width_mult,
        stem_relu=stem_relu,
        input_downsample=input_downsample,
    )


def _fixed_depth(blocks: tuple[int, ...], doc: str):
    """A registered factory for a CIFAR ResNet of fixed depth (ResNet-18/34)."""

    def factory(
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        width_mult: float = 1.0,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_relu: bool = False,
        input_downsample: int = 1,
    ) -> ResNet:
        return resnet(in_channels=in_channels, num_classes=num_classes, widths=widths,
                      blocks=blocks, width_mult=width_mult, stem_relu=stem_relu,
                      input_downsample=input_downsample)

    factory.__doc__ = doc
    return factory


resnet18 = register_model("resnet18")(_fixed_depth(
    (2, 2, 2, 2),
    "ResNet-18, CIFAR variant (3x3 stem, no max-pool); 491,520 ReLUs on 32x32 without stem ReLU."))
resnet34 = register_model("resnet34")(_fixed_depth(
    (3, 4, 6, 3), "ResNet-34, CIFAR variant (blocks 3/4/6/3)."))


@register_model("hybrenet")
def hybrenet(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    base_width: int = 16,
    multipliers: Sequence[float] = (5, 5, 3),
    blocks: Sequence[int] = (2, 2, 2, 2),
    stem_relu: bool = False,
    input_downsample: int = 1,
) -> ResNet:
    """DeepReShape HybReNet: stage widths C, C*a, C*a*b, C*a*b*c (HRN-5x5x3x = (5, 5, 3))."""
    if len(multipliers) != len(blocks) - 1:
        raise ValueError("need one multiplier per stage transition (len(blocks) - 1)")
    widths = [float(base_width)]
    for m in multipliers:
        widths.append(widths[-1] * m)
    return resnet(
        in_channels=in_channels,
        num_classes=num_classes,
        widths=[max(1, int(round(w))) for w in widths],
        blocks=blocks,
        stem_relu=stem_relu,
        input_downsample=input_downsample,
    )
