"""Mixed precision, memory format and compilation of a training run.

:func:`plan_precision` turns ``TrainConfig.precision`` into an autocast dtype for the
device (or ``None`` for fp32) and a gradient scaler for fp16; :func:`maybe_compile`
wraps ``torch.compile`` so a run without a working compiler falls back to eager mode.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class PrecisionPlan:
    """``dtype`` is the autocast dtype (``None`` = fp32, no autocast); ``scaler`` is a
    ``torch.amp.GradScaler`` for fp16, else ``None``; ``used`` names what runs."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: Any
    used: str

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Context manager: autocast to ``dtype`` on the device, or nothing for fp32."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 autocast (CPU: always in torch >= 2; CUDA: Ampere+)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def plan_precision(precision: str, device: torch.device) -> PrecisionPlan:
    """Autocast plan for ``precision`` (``fp32`` | ``bf16`` | ``fp16``) on ``device``.

    Unsupported choices fall back to fp32 with a :class:`RuntimeWarning` (never raise):
    bf16 on a device without bf16, fp16 on a device with neither CUDA nor a CPU grad scaler.
    """
    if precision == "fp32":
        return PrecisionPlan(device, None, None, "fp32")
    if precision == "bf16":
        if bf16_supported(device):
            return PrecisionPlan(device, torch.bfloat16, None, "bf16")
        warnings.warn(f"precision bf16 is not supported on {device}; training in fp32",
                      RuntimeWarning, stacklevel=3)
        return PrecisionPlan(device, None, None, "fp32")
    if precision == "fp16":
        try:
            scaler = torch.amp.GradScaler(device.type)
        except Exception as exc:  # noqa: BLE001 - backend-specific errors
            warnings.warn(f"precision fp16 is not supported on {device} ({exc}); training in "
                          "fp32", RuntimeWarning, stacklevel=3)
            return PrecisionPlan(device, None, None, "fp32")
        return PrecisionPlan(device, torch.float16, scaler, "fp16")
    raise ValueError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")


def use_channels_last(requested: bool, device: torch.device) -> bool:
    """Whether to train in channels-last layout: only on CUDA. On CPU the request is dropped
    with a warning: torch's CPU kernels corrupt the heap in the backward pass of a strided
    1x1 convolution followed by BatchNorm in channels-last (ResNet shortcuts; seen with
    torch 2.13, ``free(): invalid size``), and NHWC brings no CPU speed-up worth that risk."""
    if not requested or device.type == "cuda":
        return requested
    warnings.warn(f"channels_last is ignored on {device} (CUDA only); training in NCHW",
                  RuntimeWarning, stacklevel=3)
    return False


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in channels-last layout when asked and 4-D, else unchanged."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def maybe_compile(model: nn.Module, enabled: bool) -> Callable[[Tensor], Tensor]:
    """The forward callable to train with: ``model`` itself, or ``torch.compile(model)``
    (which compiles lazily: the caller guards the first call of each input shape)."""
    if not enabled:
        return model
    try:
        compiled = torch.compile(model)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"torch.compile unavailable ({type(exc).__name__}: {exc}); training in "
                      "eager mode", RuntimeWarning, stacklevel=2)
        return model
    return compiled
