"""Vectorized batch augmentation (random shift/crop and horizontal flip)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """Pad by ``pad`` pixels, random-crop back to ``H x W`` and optionally flip horizontally.

    Operates on a whole batch ``[B, C, H, W]`` at once (one random offset / flip per
    sample, drawn from ``generator``). ``pad == 0`` and ``flip == False`` is the identity.
    """

    pad: int = 0
    flip: bool = False
    pad_mode: Literal["constant", "replicate"] = "constant"

    @property
    def is_identity(self) -> bool:
        """True when the augmentation changes nothing (no padding crop, no flip)."""
        return self.pad == 0 and not self.flip

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.is_identity:
            return x
        if x.dim() != 4:
            raise ValueError(f"augment expects a batch [B, C, H, W], got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        rng_device = generator.device if generator is not None else torch.device("cpu")
        out = x
        if self.pad > 0 and n > 0:
            p = self.pad
            padded = F.pad(x, (p, p, p, p), mode=self.pad_mode)
            off = torch.randint(0, 2 * p + 1, (n, 2), generator=generator, device=rng_device)
            off = off.to(x.device)
            rows = off[:, 0:1] + torch.arange(h, device=x.device)  # [B, H]
            cols = off[:, 1:2] + torch.arange(w, device=x.device)  # [B, W]
            bi = torch.arange(n, device=x.device)[:, None, None, None]
            ci = torch.arange(c, device=x.device)[None, :, None, None]
            out = padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip and n > 0:
            mask = torch.rand(n, generator=generator, device=rng_device) < 0.5
            mask = mask.to(x.device)[:, None, None, None]
            out = torch.where(mask, out.flip(-1), out)
        return out


def make_augment(kind: str, input_shape: tuple[int, int, int], enabled: bool = True) -> Augment:
    """Augmentation policy for a data-set ``kind`` and its ``(C, H, W)`` input shape.

    * digits: shift by up to ``max(1, H // 8)`` pixels (replicate padding), no flip
      (mirrored digits change meaning);
    * cifar10 / cifar100 / imagefolder / tinyimagenet: pad ``max(1, H // 8)`` (4 for 32 px)
      + random crop + horizontal flip (zero padding = the train mean after normalization);
    * npz: pad ``H // 8`` + random crop without flip when ``H >= 16``, else identity;
    * shapes: pad ``max(1, H // 16)`` (2 for 32 px, replicate) + random crop + horizontal
      flip (labels are shape x texture: invariant to small shifts and mirroring);
    * synthetic (position-coded prototypes) or ``enabled=False``: identity.
    """
    _, h, _ = input_shape
    if not enabled:
        return Augment()
    if kind == "digits":
        return Augment(pad=max(1, h // 8), flip=False, pad_mode="replicate")
    if kind in ("cifar10", "cifar100", "imagefolder", "tinyimagenet"):
        return Augment(pad=max(1, h // 8), flip=True, pad_mode="constant")
    if kind == "shapes":
        return Augment(pad=max(1, h // 16), flip=True, pad_mode="replicate")
    if kind == "npz":
        return Augment(pad=h // 8, flip=False) if h >= 16 else Augment()
    return Augment()
