"""Number formatting shared by the CLI and the report renderers.

One place decides how an accuracy, a ReLU count, a duration or a technique parameter
reads, so the console and the HTML/PNG/CSV report say the same thing. Every function
returns "–" for a missing (None) or non-finite value.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard


def finite(x: Any) -> TypeGuard[int | float]:
    """A real, finite number (not bool, not NaN/inf)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_count(n: float | int | None) -> str:
    """Compact count as in PI papers: 850, 12.3K, 491.5K, 1.36M."""
    if not finite(n):
        return "–"
    a = abs(float(n))
    if a < 1_000:
        return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if a >= div * 0.99995:  # 999,960 -> 1M rather than 1000.0K
            v = float(n) / div
            s = f"{v:.3g}" if abs(v) < 99.95 else f"{v:.1f}".rstrip("0").rstrip(".")
            return f"{s}{unit}"
    return str(n)  # pragma: no cover


def fmt_int(n: int | None) -> str:
    """Exact count with thousands separators (491,520)."""
    return f"{n:,}" if finite(n) else "–"


def fmt_pct(x: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage (0.93126 -> "93.13%"); "–" when not finite."""
    return f"{100.0 * x:.{digits}f}%" if finite(x) else "–"


def fmt_pp(delta: float | None, digits: int = 2) -> str:
    """Accuracy change in percentage points, with an explicit sign."""
    if not finite(delta):
        return "–"
    v = 100.0 * delta
    if round(v, digits) == 0:
        return f"{0:.{digits}f} pp"
    return f"{v:+.{digits}f} pp".replace("-", "−")


def fmt_bytes(n: float | None) -> str:
    """Bytes with a decimal unit (3 significant digits): 1.23 MB."""
    if not finite(n):
        return "–"
    a = float(n)
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(a) >= div:
            return f"{a / div:.3g} {unit}"
    return f"{a:.0f} B"


def fmt_seconds(s: float | None) -> str:
    """Seconds in µs/ms/s up to 2 minutes, then as a duration."""
    if not finite(s):
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    return fmt_duration(s)


def fmt_duration(s: float | None) -> str:
    """Whole seconds as "1h 02m 03s" / "2m 03s" / "3s"."""
    if not finite(s):
        return "–"
    s = int(round(float(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m {sec:02d}s"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


def fmt_param(v: Any) -> str:
    """A technique parameter as a human reads it: floats to 4 significant digits,
    containers element-wise (``0.30000000000000004 -> "0.3"``, ``1e-05 -> "1e-05"``)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_param(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {fmt_param(x)}" for k, x in v.items()) + "}"
    return str(v)


def fmt_params(params: dict[str, Any]) -> str:
    """``{technique: {field: value}}`` as ``"snl: lr=0.001, epochs=5; circa: k=3"``;
    a flat mapping as ``"lr=0.001, epochs=5"``; empty as "(defaults)"."""
    if not params:
        return "(defaults)"
    if all(isinstance(v, dict) for v in params.values()):
        return "; ".join(f"{tech}: {fmt_params(fields)}" if fields else str(tech)
                         for tech, fields in params.items())
    return ", ".join(f"{k}={fmt_param(v)}" for k, v in params.items())


__all__ = ["finite", "fmt_bytes", "fmt_count", "fmt_duration", "fmt_int", "fmt_param",
           "fmt_params", "fmt_pct", "fmt_pp", "fmt_seconds"]
