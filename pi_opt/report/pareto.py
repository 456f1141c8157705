"""Pareto computations on report points: pure data, no plotting imports.

The two objectives are validation accuracy (maximized) and a cost (minimized):
the per-sample ReLU count, or the cost model's latency estimate in seconds.
Selection always uses the validation split; test accuracy is only reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pi_opt.report.schema import BudgetAnswer, LatencyBudgetAnswer, ParetoPoint, ParetoReport

__all__ = [
    "answer_budgets",
    "finalize_report",
    "hypervolume_2d",
    "hypervolume_history",
    "mark_front",
    "pareto_mask",
]


def _get(p: Any, key: str) -> Any:
    return p[key] if isinstance(p, dict) else getattr(p, key)


def _num(v: Any) -> float:
    """A finite float or NaN (None and non-numbers become NaN)."""
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _trial(p: Any, index: int) -> float:
    t = p.get("trial") if isinstance(p, dict) else getattr(p, "trial", None)
    return float(t) if isinstance(t, int) and not isinstance(t, bool) else float(index)


def pareto_mask(points: Sequence[Any], *, cost_key: str = "relus") -> list[bool]:
    """Non-dominated flags in (``val_accuracy`` up, ``points[i].<cost_key>`` down).

    ``points`` are ``ParetoPoint`` objects or dicts. A point is on the front iff
    no other point has accuracy >= and cost <= with one of them strict. Exact
    duplicates (same accuracy and cost) keep only one: the lowest ``trial``
    (else the first in input order), so the result does not depend on input
    order. Points with a missing/NaN accuracy or cost are never on the front.
    """
    keyed: list[tuple[float, float, float, int]] = []
    for i, p in enumerate(points):
        acc, cost = _num(_get(p, "val_accuracy")), _num(_get(p, cost_key))
        if math.isnan(acc) or math.isnan(cost):
            continue
        keyed.append((cost, -acc, _trial(p, i), i))
    keyed.sort()  # cost ascending, then accuracy descending, then trial, then position
    mask = [False] * len(points)
    best = -math.inf
    for _cost, neg_acc, _t, i in keyed:
        if -neg_acc > best:  # strictly better than every cheaper-or-equal point
            mask[i] = True
            best = -neg_acc
    return mask


def _cost_key(points: Sequence[ParetoPoint], objective: str) -> str:
    if objective == "relus":
        return "relus"
    if objective in ("cost", "latency"):
        # Mixing seconds and ReLU counts in one comparison is meaningless: use the
        # cost estimate only when every point has one, else fall back to ReLUs.
        if points and all(p.cost is not None and math.isfinite(p.cost) for p in points):
            return "cost"
        return "relus"
    raise ValueError(f"unknown objective {objective!r} (expected 'relus', 'cost' or 'latency')")


def mark_front(report_points: Sequence[ParetoPoint], objective: str) -> None:
    """Set ``.pareto`` on every point in place (front w.r.t. ``objective``).

    Pruned points and points violating the fairness constraint are never on the front.

    ``objective="relus"`` uses ``relus``; ``"cost"`` uses ``cost`` when every point
    has an estimate and falls back to ``relus`` otherwise.
    """
    key = _cost_key(report_points, objective)
    eligible = [p for p in report_points if not p.pruned and p.feasible]
    for p in report_points:
        p.pareto = False
    for p, on in zip(eligible, pareto_mask(eligible, cost_key=key), strict=True):
        p.pareto = on


def _front_for_answers(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    front = [p for p in points if p.pareto]
    if front or not points:
        return front
    # Nothing marked yet: answer from the ReLU front instead of returning nothing
    # (pruned and constraint-violating points never answer).
    eligible = [p for p in points if not p.pruned and p.feasible]
    return [p for p, on in zip(eligible, pareto_mask(eligible), strict=True) if on]


def answer_budgets(points: Sequence[ParetoPoint], budgets: Iterable[int]) -> list[BudgetAnswer]:
    """For each ReLU budget, the front point that answers it.

    Among front points (``pareto=True``; the ReLU front if none is marked) with
    ``relus <= budget`` the one with the best *validation* accuracy is chosen
    (ties: fewer ReLUs, then lower trial) and its *test* accuracy is reported.
    If none fits, the answer is the closest point above the budget (fewest
    ReLUs; ties: best validation accuracy), with ``met=False`` and ``gap_relus``.
    """
    front = [p for p in _front_for_answers(points) if math.isfinite(_num(p.val_accuracy))]
    out: list[BudgetAnswer] = []
    for b in budgets:
        budget = int(b)
        under = [p for p in front if p.relus <= budget]
        if under:
            best = min(under, key=lambda p: (-p.val_accuracy, p.relus, p.trial))
            out.append(BudgetAnswer(budget=budget, met=True, trial=best.trial, relus=best.relus,
                                    test_accuracy=best.test_accuracy, gap_relus=None))
            continue
        over = [p for p in front if p.relus > budget]
        if over:
            near = min(over, key=lambda p: (p.relus, -p.val_accuracy, p.trial))
            out.append(BudgetAnswer(budget=budget, met=False, trial=near.trial, relus=near.relus,
                                    test_accuracy=near.test_accuracy,
                                    gap_relus=near.relus - budget))
        else:
            out.append(BudgetAnswer(budget=budget, met=False, trial=None, relus=None,
                                    test_accuracy=None, gap_relus=None))
    return out


def _pairs(points: Iterable[Any], cost_key: str) -> list[tuple[float, float]]:
    pairs = []
    for p in points:
        if isinstance(p, (tuple, list)):
            cost, acc = _num(p[0]), _num(p[1])
        else:
            cost, acc = _num(_get(p, cost_key)), _num(_get(p, "val_accuracy"))
        if not (math.isnan(cost) or math.isnan(acc)):
            pairs.append((cost, acc))
    return pairs


def hypervolume_2d(points: Iterable[Any], ref: tuple[float, float], *,
                   cost_key: str = "relus") -> float:
    """Area dominated by ``points`` and bounded by ``ref = (cost_max, accuracy_min)``.

    ``points`` are ``(cost, accuracy)`` pairs, ``ParetoPoint`` objects or dicts
    (cost read from ``cost_key``, accuracy from ``val_accuracy``). Units:
    cost units x accuracy fraction. Points not better than ``ref`` in both
    objectives contribute nothing.
    """
    ref_cost, ref_acc = float(ref[0]), float(ref[1])
    pts = sorted((c, a) for c, a in _pairs(points, cost_key) if c < ref_cost and a > ref_acc)
    area, best = 0.0, ref_acc
    # Sweep from cheap to expensive: each point adds the strip above the best so far.
    for c, a in pts:
        if a > best:
            area += (ref_cost - c) * (a - best)
            best = a
    return area


def hypervolume_history(points: Sequence[ParetoPoint], ref: tuple[float, float], *,
                        cost_key: str = "relus") -> list[tuple[int, float]]:
    """``(trial, hypervolume of all points with trial <= it)`` in trial order."""
    ordered = sorted(points, key=lambda p: p.trial)
    out: list[tuple[int, float]] = []
    seen: list[ParetoPoint] = []
    for i, p in enumerate(ordered):
        seen.append(p)
        if i + 1 < len(ordered) and ordered[i + 1].trial == p.trial:
            continue  # harvested points share a trial: one value per trial
        out.append((p.trial, hypervolume_2d(seen, ref, cost_key=cost_key)))
    return out


def finalize_report(report: ParetoReport) -> ParetoReport:
    """A copy of ``report`` with the front marked (by its objective) and budgets answered."""
    done = report.model_copy(deep=True)
    mark_front(done.points, done.objective)
    done.answers = answer_budgets(done.points, done.budgets)
    return done


def _job_latency(p: ParetoPoint) -> float:
    return (p.latency_s or {}).get("job", math.inf)


def answer_latency_budgets(points: Sequence[ParetoPoint], budgets_ms: Iterable[float]
                           ) -> list[LatencyBudgetAnswer]:
    """For each latency budget (ms per sample on the job's network), the front point
    with the best validation accuracy whose predicted latency fits (``met``), else the
    fastest front point (``met=False``). Points without a latency prediction never answer.
    """
    front = [p for p in _front_for_answers(points)
             if math.isfinite(_job_latency(p)) and math.isfinite(_num(p.val_accuracy))]
    out: list[LatencyBudgetAnswer] = []
    for b in budgets_ms:
        fits = [p for p in front if _job_latency(p) * 1e3 <= b]
        if fits:
            best = min(fits, key=lambda p: (-p.val_accuracy, _job_latency(p), p.trial))
        elif front:
            best = min(front, key=lambda p: (_job_latency(p), p.trial))
        else:
            out.append(LatencyBudgetAnswer(budget_ms=b, met=False, trial=None, latency_ms=None,
                                           relus=None, test_accuracy=None))
            continue
        out.append(LatencyBudgetAnswer(
            budget_ms=b, met=bool(fits), trial=best.trial, latency_ms=_job_latency(best) * 1e3,
            relus=best.relus, test_accuracy=best.test_accuracy))
    return out
