"""Argument types of the ``pi-opt`` command line: argparse turns their
``ArgumentTypeError`` into a usage line (no traceback)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def input_shape(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` or ``"3x32x32"`` -> ``(3, 32, 32)`` (C, H, W; all positive)."""
    parts = text.replace("x", ",").replace("X", ",").split(",")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W with three positive integers (e.g. 3,32,32), got {text!r}")
    return dims[0], dims[1], dims[2]


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line (``'{"widths": [8, 16]}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{}}', got {text!r}")
    return value


def _parse(text: str, kind: type[int] | type[float], what: str) -> Any:
    """``kind(text)``, or an argparse error saying that ``what`` was expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(_parse(text, int, "an integer"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float(_parse(text, float, "a number"))
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value
