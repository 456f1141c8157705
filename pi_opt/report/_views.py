"""Derived, render-ready views of a ParetoReport (pure data and number formatting).

Shared by the CSV, PNG and HTML renderers so that all of them show the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

from pi_opt.report.schema import Baseline, ParetoPoint, ParetoReport

#: Search-setting keys that may hold the job's wall time in seconds.
WALL_TIME_KEYS = ("wall_time_s", "wall_s", "wall_time", "elapsed_s", "seconds")

# Colour-blind-safe qualitative palette (Okabe-Ito, then Tol "bright") for technique chains.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442",
           "#4477AA", "#EE6677", "#228833", "#AA3377", "#66CCEE", "#BBBBBB", "#000000"]


# --------------------------------------------------------------------------- formatting

def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_count(n: float | int | None) -> str:
    """Compact count as in PI papers: 850, 12.3K, 491.5K, 1.36M."""
    if not _finite(n):
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
    return f"{n:,}" if _finite(n) else "–"


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return f"{100.0 * x:.{digits}f}%" if _finite(x) else "–"


def fmt_pp(delta: float | None, digits: int = 2) -> str:
    """Accuracy change in percentage points, with an explicit sign."""
    if not _finite(delta):
        return "–"
    v = 100.0 * delta
    if round(v, digits) == 0:
        return f"{0:.{digits}f} pp"
    return f"{v:+.{digits}f} pp".replace("-", "−")


def fmt_bytes(n: float | None) -> str:
    if not _finite(n):
        return "–"
    a = float(n)
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(a) >= div:
            return f"{a / div:.3g} {unit}"
    return f"{a:.0f} B"


def fmt_seconds(s: float | None) -> str:
    if not _finite(s):
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    return fmt_duration(s)


def fmt_duration(s: float | None) -> str:
    if not _finite(s):
        return "–"
    s = int(round(float(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m {sec:02d}s"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


# --------------------------------------------------------------------------- derived data

def chain_label(chain: list[str]) -> str:
    return "+".join(chain) if chain else "(none)"


def chain_labels(report: ParetoReport) -> list[str]:
    """Distinct chain labels: requested technique chains first, then any others seen."""
    seen: dict[str, None] = {}
    for c in report.techniques:
        seen.setdefault(chain_label(c), None)
    for p in report.points:
        seen.setdefault(chain_label(p.chain), None)
    return list(seen)


def chain_colors(report: ParetoReport) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(chain_labels(report))}


def class_names(report: ParetoReport) -> list[str]:
    """One name per class (dataset ``class_names`` when consistent, else ``class i``)."""
    n = len(report.baseline.per_class_test_accuracy) or int(report.dataset.get("num_classes") or 0)
    names = report.dataset.get("class_names")
    if isinstance(names, list) and len(names) == n:
        return [str(x) for x in names]
    return [f"class {i}" for i in range(n)]


def per_class_delta(point: ParetoPoint, baseline: Baseline) -> list[float] | None:
    """Per-class test-accuracy change vs the baseline (fractions), or None when unknown."""
    a, b = point.per_class_test_accuracy, baseline.per_class_test_accuracy
    if not a or len(a) != len(b):
        return None
    return [x - y for x, y in zip(a, b, strict=True)]


def worst_class(delta: list[float] | None) -> int | None:
    """Index of the class with the largest accuracy drop (first on ties)."""
    if not delta:
        return None
    finite = [(d, i) for i, d in enumerate(delta) if _finite(d)]
    return min(finite)[1] if finite else None


def stage_kept(point: ParetoPoint) -> dict[str, int]:
    """ReLUs kept per stage (exact + Circa), stages in site order."""
    out: dict[str, int] = {}
    for s in point.sites:
        out[s.stage] = out.get(s.stage, 0) + s.relu + s.circa
    return out


def stage_order(points: list[ParetoPoint]) -> list[str]:
    seen: dict[str, None] = {}
    for p in points:
        for s in p.sites:
            seen.setdefault(s.stage, None)
    return list(seen)


def over_budget(point: ParetoPoint) -> bool:
    return point.relus > point.budget


def wall_time(report: ParetoReport) -> float | None:
    for k in WALL_TIME_KEYS:
        v = report.search.get(k)
        if _finite(v):
            return float(v)
    return None


def point_label(p: ParetoPoint) -> str:
    return f"#{p.trial} · {fmt_count(p.relus)}"


def has_mpc(report: ParetoReport) -> bool:
    return any(p.mpc is not None for p in report.points)
