"""Number formatting shared by the CLI and the report renderers.

One place decides how an accuracy, a ReLU count or a technique parameter reads,
so the console table and the HTML/PNG report say the same thing.
"""

from __future__ import annotations

import math
from typing import Any


def percent(fraction: float | None, digits: int = 1) -> str:
    """An accuracy in [0, 1] as a percentage string (``0.9734 -> "97.3%"``; None -> "-")."""
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return "-"
    return f"{100.0 * fraction:.{digits}f}%"


def count(n: int | float | None) -> str:
    """A per-sample count with thousands separators (``491520 -> "491,520"``)."""
    if n is None:
        return "-"
    return f"{int(round(n)):,}"


def param_value(v: Any) -> str:
    """A technique parameter as a human reads it: floats to 4 significant digits,
    lists/dicts element-wise (``0.30000000000000004 -> "0.3"``, ``1e-05 -> "1e-05"``)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(param_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {param_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def params_text(params: dict[str, dict[str, Any]]) -> str:
    """``{technique: {field: value}}`` as ``"snl: lr=0.001, epochs=5; circa: k=3"``."""
    parts = []
    for tech, fields in params.items():
        inner = ", ".join(f"{k}={param_value(v)}" for k, v in fields.items())
        parts.append(f"{tech}: {inner}" if inner else tech)
    return "; ".join(parts)


__all__ = ["count", "param_value", "params_text", "percent"]
