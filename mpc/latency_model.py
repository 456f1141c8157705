"""Fitting the cost model of encrypted inference to measurements (numpy only).

The model itself - :class:`~pi_opt.costmodel.LatencyModel`,
:class:`~pi_opt.costmodel.CostCounts`, ``predict*``, :func:`~pi_opt.costmodel.counts_from_profile`,
:func:`~pi_opt.costmodel.estimate_rounds` - lives in :mod:`pi_opt.costmodel` (the one
evaluator; pi_opt's search uses it). This module holds what needs measurements or lowered
plans: :class:`CostSample`, :func:`fit` (time coefficients only), :func:`samples_from_ops`
(op-level samples from :class:`mpc.results.OpRecord` s, ``inferences = 0``),
:func:`fit_hidden` (the link overlap per round, from :class:`LinkSample` s of runs on
emulated links), :func:`plan_link_estimates`, and :func:`plan_counts` /
:func:`plan_rounds`, which describe a lowered plan as sites + layers and count it with
the same evaluator as profiles
(:func:`pi_opt.costmodel.structure_counts`). The model's names are re-exported here.

This module imports neither crypten nor torch-heavy code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mpc.config import MpcConfig, link_estimates
from pi_opt.circa_faults import circa_rounds
from pi_opt.costmodel import (
    RELU_ROUNDS,
    CostCounts,
    LatencyModel,
    WeightsMode,
    counts_from_profile,
    default_cost_model,
    estimate_rounds,
    fused_rounds,
    structure_counts,
)
from pi_opt.layers import LayerProfile
from pi_opt.network import NetworkProfile
from pi_opt.profile import SiteProfile

if TYPE_CHECKING:
    from mpc.lowering import Plan


class CostSample(CostCounts):
    """Measured cost: ``seconds`` per batch (drivers, rounds and bytes as counted)."""

    seconds: float


def plan_sites(plan: Plan) -> list[SiteProfile]:
    """The plan's materialized sites as :class:`~pi_opt.profile.SiteProfile` s (per sample)."""
    out = []
    for site in plan.sites():
        c = site.counts()
        out.append(SiteProfile(
            name=site.name, stage="", shape=site.shape, granularity=site.granularity,
            elements=site.positions * site.per_position, relu=c["relu"], circa=c["circa"],
            poly=c["poly"], identity=c["identity"], poly_mults=c["poly_mults"],
            circa_k=site.circa_k if c["circa"] else None,
            circa_l=site.circa_l if c["circa"] else None))
    return out


def plan_layers(plan: Plan) -> list[LayerProfile]:
    """The plan's communicating non-site ops (conv/linear/affine, max-pool, relu)."""
    out = []
    for op in plan.ops:
        if op.kind in ("conv", "linear", "affine"):
            src = plan.ops[op.args[0].index]
            w = op.params["weight" if op.kind != "affine" else "scale"]
            out.append(LayerProfile(kind="linear", name=op.name,
                                    input_elements=_numel(src.out_shape),
                                    weight_elements=int(w.numel()),
                                    output_elements=_numel(op.out_shape)))
        elif op.kind == "max_pool":
            kh, kw = op.attrs["kernel_size"]
            out.append(LayerProfile(kind="max_pool", name=op.name,
                                    input_elements=_numel(plan.ops[op.args[0].index].out_shape),
                                    output_elements=_numel(op.out_shape), window=kh * kw))
        elif op.kind == "relu":
            n = _numel(op.out_shape)
            out.append(LayerProfile(kind="relu", name=op.name, input_elements=n,
                                    output_elements=n))
    return out


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(int(s) for s in shape)


def plan_counts(plan: Plan, *, batch_size: int = 1, weights: WeightsMode = "private"
                ) -> CostCounts:
    """Cost drivers of one batch of a lowered plan, through the same evaluator as
    profiles (:func:`pi_opt.costmodel.structure_counts`): exact rounds and bytes."""
    macs = plan.counts()["macs"]
    return structure_counts(plan_sites(plan), plan_layers(plan), plan.num_classes, macs=macs,
                            batch_size=batch_size, weights=weights)


def plan_rounds(plan: Plan, *, weights: WeightsMode = "private") -> int:
    """Rounds of one encrypted inference of a lowered plan (any batch size)."""
    return int(plan_counts(plan, weights=weights).rounds)


def plan_link_estimates(config: MpcConfig, plan: Plan, *, latency_s: float, rounds: int,
                        bytes_sent: float, batch_size: int = 1) -> dict[str, float]:
    """:func:`mpc.config.link_estimates` of a measured run of ``plan`` (``rounds``,
    ``bytes_sent`` per party): with the plan's per-layer traffic when its counted rounds
    and bytes equal the measured ones (as on every supported op), and the committed
    fit's overlap per round."""
    c = plan_counts(plan, batch_size=batch_size, weights=config.weights)
    exact = int(c.rounds) == rounds and abs(c.bytes - bytes_sent) <= 1e-6 * max(bytes_sent, 1)
    measured = CostCounts(rounds=float(rounds), bytes=float(bytes_sent),
                          traffic=c.traffic if exact else [])
    return link_estimates(config, latency_s=latency_s, counts=measured,
                          hidden_s=default_cost_model().hidden_per_round_s)


def _columns(samples: Sequence[CostCounts]) -> tuple[list[str], np.ndarray]:
    ls = sorted({l for s in samples for l in s.circa})
    names = (["relu", "mult", "mac", "byte", "round", "fused_round", "inference"]
             + [f"circa:{l}" for l in ls])
    rows = [[s.relus, s.poly_mults, s.macs, s.bytes, s.rounds, s.fused_rounds, s.inferences]
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
    """Least-squares fit (non-negative coefficients) of seconds to ``samples``.

    Only time is fitted: rounds and bytes are counted from the protocol. ``relative=True``
    minimizes relative errors (default: samples span 1e-3..1 s).
    """
    data = list(samples)
    if not data:
        raise ValueError("fit() needs at least one sample")
    names, a = _columns(data)
    secs = _nonneg_lstsq(a, np.asarray([s.seconds for s in data], dtype=np.float64),
                         relative=relative)
    c = dict(zip(names, secs.tolist(), strict=True))
    return LatencyModel(
        source=source, per_relu_s=c["relu"], per_mult_s=c["mult"], per_mac_s=c["mac"],
        per_byte_s=c["byte"], per_round_s=c["round"], per_fused_round_s=c["fused_round"],
        per_inference_s=c["inference"],
        per_circa_s={int(k.split(":")[1]): v for k, v in c.items() if k.startswith("circa:")},
        meta={"samples": len(data), "weighting": "relative" if relative else "absolute",
              **(meta or {})},
    )


class LinkSample(BaseModel):
    """One model measured on loopback and on an emulated link: ``loopback_s`` and
    ``emulated_s`` seconds per batch, its ``traffic`` (``(rounds, bytes)`` groups,
    :attr:`~pi_opt.costmodel.CostCounts.traffic`) and the emulated ``network``."""

    model_config = ConfigDict(extra="forbid")
    loopback_s: float = Field(gt=0.0)
    emulated_s: float = Field(gt=0.0)
    traffic: list[tuple[float, float]]
    network: NetworkProfile

    def error(self, hidden_s: float) -> float:
        """Relative error of ``loopback_s`` + the link term with ``hidden_s`` per round."""
        link = self.network.traffic_s(self.traffic, hidden_s=hidden_s)
        return (self.loopback_s + link) / self.emulated_s - 1.0


def fit_hidden(samples: Sequence[LinkSample], *, steps: int = 200) -> float:
    """Overlap per round (seconds, >= 0) minimizing the squared relative errors of
    ``loopback + link`` against the emulated measurements: a grid over [0, largest RTT],
    refined once around the best point (the link term is piecewise linear in it).

    Raises ValueError without samples.
    """
    if not samples:
        raise ValueError("fit_hidden() needs at least one emulated-link sample")

    def loss(h: float) -> float:
        return sum(s.error(h) ** 2 for s in samples)

    hi = max(s.network.rtt_ms for s in samples) * 1e-3
    grid = np.linspace(0.0, hi, steps + 1)
    best = float(grid[int(np.argmin([loss(h) for h in grid]))])
    width = hi / steps
    fine = np.linspace(max(0.0, best - width), best + width, steps + 1)
    return float(fine[int(np.argmin([loss(h) for h in fine]))])


def samples_from_ops(records: Iterable[Any]) -> list[CostSample]:
    """Op-level samples from :class:`mpc.results.OpRecord` s (``inferences = 0``)."""
    out = []
    for r in records:
        circa = {int(r.circa_l): float(r.circa)} if r.circa and r.circa_l else {}
        fused = fused_rounds(relu=r.relu, squares=r.poly_mults, circa=r.circa,
                             circa_l=r.circa_l) if r.kind == "mixed" else 0
        out.append(CostSample(
            relus=float(r.relu + r.maxpool_comparisons), circa=circa,
            poly_mults=float(r.poly_mults), macs=float(r.macs), rounds=float(r.rounds),
            bytes=float(r.bytes_sent), inferences=0.0, fused_rounds=float(fused),
            seconds=float(r.seconds)))
    return out


__all__ = [
    "RELU_ROUNDS", "CostCounts", "CostSample", "LatencyModel", "LinkSample", "circa_rounds",
    "counts_from_profile", "estimate_rounds", "fit", "fit_hidden", "plan_counts", "plan_layers",
    "plan_link_estimates", "plan_rounds", "plan_sites", "samples_from_ops",
]
