"""Fitting the cost model of encrypted inference to measurements (numpy only).

The model itself - :class:`~pi_opt.costmodel.LatencyModel`,
:class:`~pi_opt.costmodel.CostCounts`, ``predict*``, :func:`~pi_opt.costmodel.counts_from_profile`,
:func:`~pi_opt.costmodel.estimate_rounds` - lives in :mod:`pi_opt.costmodel` (the one
evaluator; pi_opt's search uses it). This module holds what needs measurements or lowered
plans: :class:`CostSample`, :func:`fit`, :func:`samples_from_ops` (op-level samples from
:class:`mpc.results.OpRecord` s, ``inferences = 0``), :func:`plan_rounds` and
:func:`plan_counts`. The model's names are re-exported here.

This module imports neither crypten nor torch-heavy code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pi_opt.circa_faults import circa_rounds
from pi_opt.costmodel import (
    RELU_ROUNDS,
    CostCounts,
    LatencyModel,
    counts_from_profile,
    estimate_rounds,
)

if TYPE_CHECKING:
    from mpc.lowering import Plan


class CostSample(CostCounts):
    """Measured cost: ``seconds`` per batch, optionally ``bytes`` sent per party."""

    seconds: float
    bytes: float | None = None


def plan_rounds(plan: Plan, *, weights: str = "private") -> int:
    """Rounds of one encrypted inference of a lowered plan, as the executor runs it.

    Exact for conv/linear/BN (1 each with private weights, 0 with public), sites and
    the output reveal (1); max pooling is approximated as ``9 * ceil(log2(k*k))``.
    """
    total = 1  # reveal to the client
    for op in plan.ops:
        if op.kind in ("conv", "linear", "affine"):
            total += 1 if weights == "private" else 0
        elif op.kind == "relu":
            total += RELU_ROUNDS
        elif op.kind == "max_pool":
            kh, kw = op.attrs["kernel_size"]
            total += RELU_ROUNDS * max(1, math.ceil(math.log2(kh * kw)))
        elif op.kind == "mixed" and op.site is not None:
            c = op.site.counts()
            total += ((RELU_ROUNDS if c["relu"] else 0) + (1 if c["poly_mults"] else 0)
                      + (circa_rounds(op.site.circa_l) if c["circa"] else 0))
    return total


def plan_counts(plan: Plan, *, batch_size: int = 1, weights: str = "private") -> CostCounts:
    """Cost drivers of one batch of a lowered plan (exact rounds, Circa by l)."""
    circa: dict[int, float] = {}
    for site in plan.sites():
        n = site.counts()["circa"]
        if n:
            circa[site.circa_l] = circa.get(site.circa_l, 0.0) + n * batch_size
    c = plan.counts()
    return CostCounts(
        relus=float((c["relu"] + c["maxpool_comparisons"]) * batch_size), circa=circa,
        poly_mults=float(c["poly_mults"] * batch_size), macs=float(c["macs"] * batch_size),
        rounds=float(plan_rounds(plan, weights=weights)), inferences=1.0)


def _columns(samples: Sequence[CostCounts]) -> tuple[list[str], np.ndarray]:
    ls = sorted({l for s in samples for l in s.circa})
    names = ["relu", "mult", "mac", "round", "inference"] + [f"circa:{l}" for l in ls]
    rows = [[s.relus, s.poly_mults, s.macs, s.rounds, s.inferences]
            + [s.circa.get(l, 0.0) for l in ls] for s in samples]
    return names, np.asarray(rows, dtype=np.float64).reshape(len(samples), len(names))


def _nonneg_lstsq(a: np.ndarray, b: np.ndarray, *, relative: bool) -> np.ndarray:
    """Least squares with non-negative coefficients (active set: drop the most negative).

    ``relative``: minimize relative rather than absolute residuals (rows scaled by
    ``1 / b``), so small ops weigh as much as big ones. Columns that are all zero get 0;
    columns are scaled to unit max for conditioning.
    """
    if relative:
        w = 1.0 / np.maximum(np.abs(b), 1e-12)
        a, b = a * w[:, None], b * w
    n = a.shape[1]
    scale = np.abs(a).max(axis=0)
    active = [j for j in range(n) if scale[j] > 0]
    coef = np.zeros(n)
    while active:
        sub = a[:, active] / scale[active]
        sol, *_ = np.linalg.lstsq(sub, b, rcond=None)
        sol = sol / scale[active]
        if (sol >= 0).all():
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return coef


def fit(samples: Iterable[CostSample], *, relative: bool = True, source: str = "fitted",
        meta: dict[str, Any] | None = None) -> LatencyModel:
    """Least-squares fit (non-negative coefficients) of seconds and bytes to ``samples``.

    ``relative=True`` minimizes relative errors (default: samples span 1e-3..1 s).
    Byte coefficients are fitted on the samples that carry ``bytes`` (rounds excluded).
    """
    data = list(samples)
    if not data:
        raise ValueError("fit() needs at least one sample")
    names, a = _columns(data)
    secs = _nonneg_lstsq(a, np.asarray([s.seconds for s in data], dtype=np.float64),
                         relative=relative)
    with_bytes = [i for i, s in enumerate(data) if s.bytes is not None]
    nb = np.zeros(len(names))
    if with_bytes:
        ab = a[with_bytes].copy()
        ab[:, names.index("round")] = 0.0
        bb = np.asarray([data[i].bytes for i in with_bytes], dtype=np.float64)
        keep = bb > 0
        nb = _nonneg_lstsq(ab[keep], bb[keep], relative=relative) if keep.any() else nb
    c, cb = dict(zip(names, secs.tolist(), strict=True)), dict(zip(names, nb.tolist(), strict=True))
    return LatencyModel(
        source=source, per_relu_s=c["relu"], per_mult_s=c["mult"], per_mac_s=c["mac"],
        per_round_s=c["round"], per_inference_s=c["inference"],
        per_circa_s={int(k.split(":")[1]): v for k, v in c.items() if k.startswith("circa:")},
        per_relu_bytes=cb["relu"], per_mult_bytes=cb["mult"], per_mac_bytes=cb["mac"],
        per_inference_bytes=cb["inference"],
        per_circa_bytes={int(k.split(":")[1]): v for k, v in cb.items()
                         if k.startswith("circa:")},
        meta={"samples": len(data), "weighting": "relative" if relative else "absolute",
              **(meta or {})},
    )


def samples_from_ops(records: Iterable[Any]) -> list[CostSample]:
    """Op-level samples from :class:`mpc.results.OpRecord` s (``inferences = 0``)."""
    out = []
    for r in records:
        circa = {int(r.circa_l): float(r.circa)} if r.circa and r.circa_l else {}
        out.append(CostSample(
            relus=float(r.relu + r.maxpool_comparisons), circa=circa,
            poly_mults=float(r.poly_mults), macs=float(r.macs), rounds=float(r.rounds),
            inferences=0.0, seconds=float(r.seconds), bytes=float(r.bytes_sent)))
    return out


__all__ = [
    "RELU_ROUNDS", "CostCounts", "CostSample", "LatencyModel", "circa_rounds",
    "counts_from_profile", "estimate_rounds", "fit", "plan_counts", "plan_rounds", "samples_from_ops",
]
