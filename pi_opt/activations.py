"""The mixed activation that replaces every ReLU site of a model.

Each position (element of the per-sample activation tensor, or channel) is one
of four kinds:

* ``IDENTITY`` - linearized: free in MPC, 0 ReLUs.
* ``RELU``     - exact ReLU: 1 ReLU (one secure comparison) per element.
* ``POLY``     - per-channel polynomial ``a0 + a1 x + a2 x^2`` (public coefficients):
  0 ReLUs, 1 secure multiplication (a square) per element when ``a2 != 0``.
* ``CIRCA``    - stochastic ReLU with a truncated sign test (``pi_opt.circa_faults``):
  counted as 1 ReLU, tagged with its (k, l) truncation.

All state lives in buffers, so ``state_dict``/safetensors round-trips are exact.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

import torch
from torch import Tensor, nn

from pi_opt.circa_faults import FRAC_BITS, circa_relu

Granularity = Literal["element", "channel"]


class Kind(IntEnum):
    """What an activation element computes: identity, exact ReLU, polynomial, or Circa's
    truncated-sign ReLU (stored as int8 codes in ``MixedActivation.kinds``).
    """

    IDENTITY = 0
    RELU = 1
    POLY = 2
    CIRCA = 3


class MixedActivation(nn.Module):
    """Per-position choice among identity / ReLU / polynomial / Circa ReLU.

    Buffers:
        kinds: int8 ``[C, H, W]`` (element granularity) or ``[C, 1, 1]`` (channel);
            empty (``[0]``) until :meth:`materialize` - then the site is all-ReLU.
        poly: float32 ``[C, 3]`` coefficients (a0, a1, a2) per channel; ``[0, 3]`` if unused.
        circa_bits: int64 ``[3]`` = (k dropped low bits, l kept bits, fractional bits).
    """

    kinds: Tensor
    poly: Tensor
    circa_bits: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kinds", torch.zeros(0, dtype=torch.int8))
        self.register_buffer("poly", torch.zeros(0, 3))
        self.register_buffer("circa_bits", torch.tensor([0, 64, FRAC_BITS], dtype=torch.int64))
        self.input_shape: tuple[int, int, int] | None = None  # (C, H, W) per sample
        self.circa_generator: torch.Generator | None = None
        self._kinds_cache: tuple[tuple[int, int, int], list[int]] | None = None

    # ---- construction -------------------------------------------------
    def materialize(
        self, input_shape: tuple[int, ...], granularity: Granularity = "element"
    ) -> MixedActivation:
        """Allocate an all-ReLU kinds map for per-sample input ``(C, H, W)`` or ``(F,)``."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 1:
            shape = (shape[0], 1, 1)
        if len(shape) != 3:
            raise ValueError(f"activation input must be (C,H,W) or (F,), got {shape}")
        self.input_shape = (shape[0], shape[1], shape[2])
        kshape = shape if granularity == "element" else (shape[0], 1, 1)
        self.kinds = torch.full(kshape, int(Kind.RELU), dtype=torch.int8,
                                device=self.kinds.device)
        return self

    @property
    def granularity(self) -> Granularity:
        """``"channel"`` when ``kinds`` is ``[C, 1, 1]`` over a spatial input, else ``"element"``."""
        if self.input_shape is None or self.kinds.dim() != 3:
            return "element"
        c, h, w = self.input_shape
        return "channel" if (h * w > 1 and tuple(self.kinds.shape[1:]) == (1, 1)) else "element"

    @property
    def materialized(self) -> bool:
        """True once ``kinds`` is allocated (before that the site is all-ReLU)."""
        return self.kinds.numel() > 0

    def set_kinds(self, kinds: Tensor) -> None:
        """Replace the kinds map (int, broadcastable to the stored shape)."""
        if not self.materialized:
            raise RuntimeError("materialize() the site before setting kinds")
        if tuple(kinds.shape) != tuple(self.kinds.shape):
            raise ValueError(f"kinds shape {tuple(kinds.shape)} != {tuple(self.kinds.shape)}")
        self.kinds = kinds.to(dtype=torch.int8, device=self.kinds.device).contiguous()

    def set_poly(self, coeffs: Tensor) -> None:
        """Per-channel coefficients ``[C, 3]`` (a0, a1, a2)."""
        if self.input_shape is None or tuple(coeffs.shape) != (self.input_shape[0], 3):
            raise ValueError(f"poly coefficients must be [C, 3], got {tuple(coeffs.shape)}")
        self.poly = coeffs.detach().to(torch.float32, copy=True).to(self.kinds.device)

    def set_circa(self, k: int, l: int, frac_bits: int = FRAC_BITS) -> None:
        """Make CIRCA elements drop ``k`` low bits and keep ``l`` bits of a fixed-point value
        with ``frac_bits`` fractional bits.

        Raises ValueError unless ``k >= 0``, ``l >= 2`` and ``k + l <= 64``.
        """
        if not (0 <= k and 2 <= l and k + l <= 64):
            raise ValueError(f"invalid Circa truncation k={k}, l={l}")
        self.circa_bits = torch.tensor([k, l, frac_bits], dtype=torch.int64,
                                       device=self.kinds.device)

    # ---- views ---------------------------------------------------------
    def full_kinds(self) -> Tensor:
        """Kinds broadcast to the per-sample shape ``[C, H, W]`` (all RELU if unmaterialized)."""
        if self.input_shape is None:
            raise RuntimeError("site shape unknown: run a forward pass or materialize()")
        if not self.materialized:
            return torch.full(self.input_shape, int(Kind.RELU), dtype=torch.int8)
        return self.kinds.expand(*self.input_shape)

    def counts(self) -> dict[str, int]:
        """Per-sample element counts by kind."""
        k = self.full_kinds()
        return {kind.name.lower(): int((k == kind).sum()) for kind in Kind}

    # ---- forward -------------------------------------------------------
    def _poly(self, x: Tensor) -> Tensor:
        c = self.poly.to(x.dtype)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return c[:, 0].view(shape) + x * (c[:, 1].view(shape) + x * c[:, 2].view(shape))

    def _present_kinds(self) -> list[int]:
        """Kinds present in the map, cached per tensor version (avoids a device sync per call)."""
        key = (self.kinds.data_ptr(), self.kinds._version, self.kinds.numel())
        if self._kinds_cache is None or self._kinds_cache[0] != key:
            self._kinds_cache = (key, torch.unique(self.kinds).tolist())
        return self._kinds_cache[1]

    def forward(self, x: Tensor) -> Tensor:
        """Apply the per-element kinds to ``x`` (``[N, C, H, W]`` or ``[N, C]``); records the
        input shape on the first call. Unmaterialized sites are plain ReLU.
        """
        if self.input_shape is None:
            self.input_shape = tuple(x.shape[1:]) if x.dim() == 4 else (x.shape[1], 1, 1)  # type: ignore[assignment]
        if not self.materialized:
            return torch.relu(x)
        kinds = self.kinds if x.dim() == 4 else self.kinds.view(-1)
        uniq = self._present_kinds()
        if len(uniq) == 1:
            only = uniq[0]
            if only == Kind.RELU:
                return torch.relu(x)
            if only == Kind.IDENTITY:
                return x
        out = x
        for kind in uniq:
            if kind == Kind.IDENTITY:
                continue
            if kind == Kind.RELU:
                val = torch.relu(x)
            elif kind == Kind.POLY:
                val = self._poly(x) if x.dim() == 4 else self._poly(x.view(*x.shape, 1, 1)).view_as(x)
            else:
                k, l, f = (int(v) for v in self.circa_bits)
                val = circa_relu(x, k, l, frac_bits=f, generator=self.circa_generator)
            out = torch.where(kinds == kind, val, out)
        return out

    def extra_repr(self) -> str:
        """Non-zero per-sample counts by kind, or ``all-relu (unmaterialized)``."""
        if not self.materialized:
            return "all-relu (unmaterialized)"
        c = self.counts()
        return ", ".join(f"{k}={v}" for k, v in c.items() if v)
