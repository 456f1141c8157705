"""Make ``import crypten`` (0.4.1) work on torch 2.13, and decode revealed values exactly.

Only what this package needs (no ONNX: models are lowered with torch.fx):

* ``torch.onnx._internal.registration`` moved to
  ``torch.onnx._internal.torchscript_exporter.registration``; crypten's ONNX converter
  imports the old name at import time, so the old name is aliased before importing.
* CrypTen's ``FixedPointEncoder.decode`` divides negative values by ``scale - 1`` and
  floors, so e.g. ``-3*2**16 + 1`` decodes to ``-3.99998``. :func:`decode` divides
  the revealed int64 exactly instead.
* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6; we never call
  ``crypten.load`` (weights come from safetensors), so nothing is patched there.

The communicator patches (batched openings, shared rounds, link emulation) live in
:mod:`mpc.exchange`.

Import crypten only through :func:`import_crypten`, and only inside party processes.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

import torch
from torch import Tensor

_OLD_REGISTRATION = "torch.onnx._internal.registration"
_NEW_REGISTRATION = "torch.onnx._internal.torchscript_exporter.registration"


def install() -> None:
    """Alias the moved torch.onnx registration module (idempotent)."""
    if _OLD_REGISTRATION in sys.modules:
        return
    try:
        sys.modules[_OLD_REGISTRATION] = importlib.import_module(_NEW_REGISTRATION)
    except ImportError:  # older torch still has the old module, or a future one has neither
        try:
            importlib.import_module(_OLD_REGISTRATION)
        except ImportError:
            stub = ModuleType(_OLD_REGISTRATION)
            stub.registry = None  # type: ignore[attr-defined]
            sys.modules[_OLD_REGISTRATION] = stub


def import_crypten() -> ModuleType:
    """Install the compat aliases and return the ``crypten`` module."""
    install()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import crypten
    return crypten


def crypten_version() -> str | None:
    """Installed crypten version without importing it (``None`` if missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crypten")
    except PackageNotFoundError:
        return None


def decode(revealed: Tensor, precision_bits: int = 16) -> Tensor:
    """Revealed fixed-point int64 -> float64, ``v / 2**precision_bits`` exactly.

    Exact for ``|v| < 2**53`` (float64 mantissa); CrypTen's own decode is off by
    about -1.0 for some negative values (crypten.md row L).
    """
    if revealed.dtype != torch.int64:
        raise TypeError(f"decode expects int64, got {revealed.dtype}")
    return revealed.to(torch.float64) / float(2**precision_bits)
