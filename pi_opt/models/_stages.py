"""The stage builder shared by the residual networks (ResNet, HybReNet, Wide ResNet)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

#: ``block(cin, cout, stride) -> nn.Module``
BlockFactory = Callable[[int, int, int], nn.Module]


def add_stages(net: nn.Module, block: BlockFactory, cin: int, widths: Sequence[int],
               blocks: Sequence[int]) -> tuple[int, list[str]]:
    """Add ``layer1 .. layerS`` to ``net``; returns (output channels, stage names).

    Stage ``s`` is an ``nn.Sequential`` of ``blocks[s-1]`` blocks of ``widths[s-1]``
    output channels; the first block of every stage after the first has stride 2 (halves
    H and W). Site names therefore read ``layer{s}.{b}.<relu>``. The channel count is
    the last stage's (the head's input).
    """
    names: list[str] = []
    for s, (width, count) in enumerate(zip(widths, blocks, strict=True), start=1):
        layers = []
        for b in range(count):
            layers.append(block(cin, width, 2 if (b == 0 and s > 1) else 1))
            cin = width
        net.add_module(f"layer{s}", nn.Sequential(*layers))
        names.append(f"layer{s}")
    return cin, names
