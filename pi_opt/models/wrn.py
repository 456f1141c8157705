"""Pre-activation Wide ResNet (WRN-d-k), SNL placement.

Site names: ``layer{s}.{b}.relu1`` (pre-activation of the block input) and
``layer{s}.{b}.relu2`` (between the two convs). WRN-22-8 on 32x32 has
671,744 / 458,752 / 229,376 ReLUs per stage (1,359,872 in all) without the
final BN-ReLU (``final_relu=False``, SNL's count).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pi_opt.models._registry import register_model
from pi_opt.models._stages import add_stages


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ shortcut): a pre-activation WRN block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, cin, H, W]`` -> ``[N, cout, H/stride, W/stride]``."""
        o = self.relu1(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.relu2(self.bn2(y)))
        # Projection shortcuts read the activated input (standard WRN); identity ones the raw input.
        return y + (self.shortcut(o) if not isinstance(self.shortcut, nn.Identity) else x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: stem conv -> 3 stages of (depth-4)/6 PreActBlocks ->
    BN (-> ReLU when ``final_relu``) -> global average pool -> FC. Input [N, C, H, W].

    Raises ValueError when ``depth`` is not 6n+4.
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, depth: int, widen: int, final_relu: bool
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WRN depth must be 6n+4")
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        cin, self.stage_names = add_stages(self, PreActBlock, 16, widths, [n] * len(widths))
        self.final_bn = nn.BatchNorm2d(cin)
        self.final_relu: nn.Module = nn.ReLU() if final_relu else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``[N, C, H, W]`` -> logits ``[N, num_classes]``."""
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = self.final_relu(self.final_bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("wrn")
def wrn(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    depth: int = 22,
    widen: int = 8,
    final_relu: bool = False,
) -> WideResNet:
    """Wide ResNet depth/widen (WRN-22-8 by default)."""
    return WideResNet(
        in_channels=in_channels, num_classes=num_classes, depth=depth, widen=widen,
        final_relu=final_relu,
    )


@register_model("wrn22_8")
def wrn22_8(*, in_channels: int = 3, num_classes: int = 10, final_relu: bool = False) -> WideResNet:
    """WRN-22-8 (depth 22, widen 8), the SNL/AutoReP CIFAR-100 network."""
    return wrn(in_channels=in_channels, num_classes=num_classes, depth=22, widen=8,
               final_relu=final_relu)
