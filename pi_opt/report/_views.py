"""Derived, render-ready views of a ParetoReport (pure data and number formatting).

Shared by the CSV, PNG and HTML renderers so that all of them show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pi_opt.formatting import (  # re-exported: the renderers import them from here
    finite,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_int,
    fmt_pct,
    fmt_pp,
    fmt_seconds,
)
from pi_opt.report.schema import Baseline, MpcMeasurement, ParetoPoint, ParetoReport

#: Search-setting keys that may hold the job's wall time in seconds.
WALL_TIME_KEYS = ("wall_time_s", "wall_s", "wall_time", "elapsed_s", "seconds")

__all__ = ["fmt_bytes", "fmt_count", "fmt_duration", "fmt_int", "fmt_pct", "fmt_pp",
           "fmt_seconds"]

# Colour-blind-safe qualitative palette (Okabe-Ito, then Tol "bright") for technique chains.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442",
           "#4477AA", "#EE6677", "#228833", "#AA3377", "#66CCEE", "#BBBBBB", "#000000"]


# --------------------------------------------------------------------------- derived data

def chain_label(chain: list[str]) -> str:
    """Display label of a technique chain: names joined by ``+``, ``(none)`` when empty."""
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
    """Colour (hex) per chain label, from :data:`PALETTE`, cycling past 14 chains."""
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
    usable = [(d, i) for i, d in enumerate(delta) if finite(d)]
    return min(usable)[1] if usable else None


def stage_kept(point: ParetoPoint) -> dict[str, int]:
    """ReLUs kept per stage (exact + Circa), stages in site order."""
    out: dict[str, int] = {}
    for s in point.sites:
        out[s.stage] = out.get(s.stage, 0) + s.relu + s.circa
    return out


def stage_order(points: list[ParetoPoint]) -> list[str]:
    """Stage names in first-seen order over the points' sites."""
    seen: dict[str, None] = {}
    for p in points:
        for s in p.sites:
            seen.setdefault(s.stage, None)
    return list(seen)


def over_budget(point: ParetoPoint) -> bool:
    """True when the point keeps more ReLUs (per sample) than its budget."""
    return point.relus > point.budget


def wall_time(report: ParetoReport) -> float | None:
    """The job's wall time in seconds from the search settings, ``None`` when not recorded."""
    for k in WALL_TIME_KEYS:
        v = report.search.get(k)
        if finite(v):
            return float(v)
    return None


def point_label(p: ParetoPoint) -> str:
    """Short label of a point: ``#trial · ReLU count``."""
    return f"#{p.trial} · {fmt_count(p.relus)}"


def fmt_latency(m: MpcMeasurement | None) -> str:
    """Median MPC latency with the min–max spread of its repeats: "1.2 s (1.1–1.5 s)"."""
    if m is None:
        return "–"
    text = fmt_seconds(m.latency_s)
    if m.latency_min_s is not None and m.latency_max_s is not None and m.repeats > 1:
        text += f" ({fmt_seconds(m.latency_min_s)}–{fmt_seconds(m.latency_max_s)})"
    return text


def has_mpc(report: ParetoReport) -> bool:
    """True when at least one point has an MPC measurement."""
    return any(p.mpc is not None for p in report.points)


@dataclass(frozen=True)
class ReluAxis:
    """Placement of ReLU counts on a log x axis, shared by the HTML and PNG renderers.

    0 has no place on a log axis: 0-ReLU (fully linearized) points are drawn at
    ``zero_at``, a third of a decade left of the smallest positive count, with their own
    marker, a "0" label and a dotted break line at ``break_at`` so they never read as a
    small positive count.
    """

    zero_at: float
    break_at: float
    has_zero: bool

    def x(self, relus: float) -> float:
        """The x position of a count (``zero_at`` for 0)."""
        return self.zero_at if relus <= 0 else float(relus)


#: Legend / hover text of a 0-ReLU point.
ZERO_RELU_LABEL = "0 ReLUs (fully linearized; drawn left of the axis break)"


def relu_axis(report: ParetoReport) -> ReluAxis:
    """The :class:`ReluAxis` for every count the report plots (points, baseline, budgets)."""
    counts = [p.relus for p in report.points] + [report.baseline.relus] + list(report.budgets)
    positive = [v for v in counts if v > 0]
    smallest = float(min(positive)) if positive else 1.0
    return ReluAxis(zero_at=smallest / 10 ** (1 / 3), break_at=smallest / 10 ** (1 / 6),
                    has_zero=any(p.relus <= 0 for p in report.points))


def is_zero_relu(point: ParetoPoint) -> bool:
    """True for a fully linearized point (no exact or Circa ReLU left)."""
    return point.relus <= 0
