"""CIFAR MobileNetV2 (inverted residuals with depthwise convolutions), ReLU activations.

Site names: ``stem_relu``; ``layer{s}.{b}.relu1`` (after the 1x1 expansion, absent when
the stage's expansion is 1) and ``layer{s}.{b}.relu2`` (after the 3x3 depthwise conv);
``head.relu`` (after the last 1x1 conv). The projection back to the block's output width
is linear (no ReLU), as in MobileNetV2. ReLU replaces ReLU6 (a clamp would add a second
comparison per element in 2PC). CIFAR variant: stem stride 1 and stage 2 stride 1, so a
32x32 input ends at 4x4. Depthwise convolutions are ``Conv2d(groups=channels)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pi_opt.models._registry import register_model

#: (expansion t, output channels c, stride s of the first block) per stage.
MOBILENET_V2_STAGES: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1), (6, 24, 1), (6, 32, 2), (6, 64, 2), (6, 96, 1), (6, 160, 2), (6, 320, 1),
)
#: Blocks per stage of MobileNetV2.
MOBILENET_V2_BLOCKS: tuple[int, ...] = (1, 2, 3, 4, 3, 3, 1)


class InvertedResidual(nn.Module):
    """[1x1 expand - BN - ReLU] - 3x3 depthwise (stride) - BN - ReLU - 1x1 project - BN,
    plus the input when ``stride == 1`` and ``cin == cout``.
    ``[N, cin, H, W]`` -> ``[N, cout, H/stride, W/stride]``."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand: nn.Module = nn.Identity()
        if expansion != 1:
            self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False),
                                        nn.BatchNorm2d(hidden))
            self.relu1 = nn.ReLU()
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.relu2 = nn.ReLU()
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        """``[N, cin, H, W]`` -> ``[N, cout, H/stride, W/stride]``."""
        y = x
        if hasattr(self, "relu1"):
            y = self.relu1(self.expand(x))
        y = self.bn3(self.project(self.relu2(self.bn2(self.depthwise(y)))))
        return y + x if self.residual else y


class ConvBNReLUHead(nn.Module):
    """1x1 conv - BN - ReLU (site ``head.relu``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``[N, cin, H, W]`` -> ``[N, cout, H, W]``."""
        return self.relu(self.bn(self.conv(x)))


class MobileNetV2(nn.Module):
    """Stem conv3x3 - BN - ReLU -> stages of :class:`InvertedResidual` -> 1x1 head ->
    global average pool -> FC. ``stages``: (expansion, channels, first stride) per stage.

    Raises ValueError when ``stages`` and ``blocks`` differ in length or are empty, or
    a count is below 1.
    """

    def __init__(self, *, in_channels: int, num_classes: int, stem_width: int,
                 stages: Sequence[tuple[int, int, int]], blocks: Sequence[int],
                 head_width: int, input_downsample: int = 1) -> None:
        super().__init__()
        if len(stages) != len(blocks) or not stages:
            raise ValueError("stages and blocks must be non-empty and of equal length")
        if min(blocks) < 1 or input_downsample < 1:
            raise ValueError("blocks and input_downsample must be >= 1")
        self.input_pool: nn.Module = (
            nn.AvgPool2d(input_downsample) if input_downsample > 1 else nn.Identity())
        self.stem = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem_width)
        self.stem_relu = nn.ReLU()
        cin, self.stage_names = stem_width, []
        for s, ((t, c, stride), count) in enumerate(zip(stages, blocks, strict=True), 1):
            units = []
            for b in range(count):
                units.append(InvertedResidual(cin, c, stride if b == 0 else 1, t))
                cin = c
            self.add_module(f"layer{s}", nn.Sequential(*units))
            self.stage_names.append(f"layer{s}")
        self.head = ConvBNReLUHead(cin, head_width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head_width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``[N, C, H, W]`` -> logits ``[N, num_classes]``."""
        x = self.stem_relu(self.stem_bn(self.stem(self.input_pool(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.pool(self.head(x)), 1))


@register_model("mobilenet_v2")
def mobilenet_v2(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    width_mult: float = 1.0,
    expansion: int | None = None,
    blocks: Sequence[int] = MOBILENET_V2_BLOCKS,
    head_width: int = 1280,
    input_downsample: int = 1,
) -> MobileNetV2:
    """MobileNetV2, CIFAR variant (depthwise inverted residuals); ``expansion`` overrides t=6.

    Channels (stem 32, stages, ``head_width``) are scaled by ``width_mult`` (at least 1);
    ``blocks`` gives the blocks of each of the 7 stages.
    """
    def scaled(c: int) -> int:
        return max(1, int(round(c * width_mult)))

    stages = [(t if expansion is None or t == 1 else expansion, scaled(c), s)
              for t, c, s in MOBILENET_V2_STAGES]
    return MobileNetV2(in_channels=in_channels, num_classes=num_classes,
                       stem_width=scaled(32), stages=stages, blocks=list(blocks),
                       head_width=scaled(head_width), input_downsample=input_downsample)
