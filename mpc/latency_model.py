"""A linear cost model of encrypted inference, fitted to measurements (numpy only).

``seconds = per_relu * relus + sum_l per_circa[l] * circa_l + per_mult * poly_mults
          + per_mac * macs + per_round * rounds + per_inference * inferences``

and the same form for ``bytes`` (bytes sent per party). Circa costs are keyed by
``l`` (bits kept): the protocol's rounds and bytes depend on ``l`` only, ``k``
changes the fault rate, not the cost. Max-pool comparisons are costed as exact
ReLUs. Samples can be whole inferences (``inferences = 1``) or single ops
(``inferences = 0``), e.g. :class:`mpc.results.OpRecord` s. The per-inference term
absorbs input sharing, output reveal and interpreter overhead.

This module imports neither crypten nor torch-heavy code, so pi_opt's search can
rank candidates with :meth:`LatencyModel.predict` before measuring any of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from mpc.circa_sign import rounds as circa_rounds
from pi_opt.profile import ModelProfile

if TYPE_CHECKING:
    from mpc.lowering import Plan

#: Rounds of CrypTen's exact ReLU layer (A2B, 7 AND levels, B2A, multiply).
RELU_ROUNDS = 9


class CostCounts(BaseModel):
    """Cost drivers of one sample (per batch). Circa counts are keyed by ``l``."""

    model_config = ConfigDict(extra="forbid")
    relus: float = 0.0
    circa: dict[int, float] = Field(default_factory=dict)
    poly_mults: float = 0.0
    macs: float = 0.0
    rounds: float = 0.0
    inferences: float = 0.0


class CostSample(CostCounts):
    """Measured cost: ``seconds`` per batch, optionally ``bytes`` sent per party."""

    seconds: float
    bytes: float | None = None


#: Keys written for :class:`pi_opt.costmodel.CostModel` (derived; ignored when loading).
_COMPAT_KEYS = ("const_s", "per_circa_relu_s")


class LatencyModel(BaseModel):
    """Fitted coefficients: seconds (and bytes sent per party) per unit of each driver.

    The JSON also carries ``const_s`` (= ``per_inference_s``) and ``per_circa_relu_s``
    (the l = 16 coefficient) so :class:`pi_opt.costmodel.CostModel` can read the file.
    """

    model_config = ConfigDict(extra="forbid")
    source: str = "unfitted"
    per_relu_s: float = 0.0
    per_circa_s: dict[int, float] = Field(default_factory=dict)
    per_mult_s: float = 0.0
    per_mac_s: float = 0.0
    per_round_s: float = 0.0
    per_inference_s: float = 0.0
    per_relu_bytes: float = 0.0
    per_circa_bytes: dict[int, float] = Field(default_factory=dict)
    per_mult_bytes: float = 0.0
    per_mac_bytes: float = 0.0
    per_inference_bytes: float = 0.0
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _drop_compat(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in _COMPAT_KEYS}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def const_s(self) -> float:
        return self.per_inference_s

    @computed_field  # type: ignore[prop-decorator]
    @property
    def per_circa_relu_s(self) -> float:
        return self._circa_coef(self.per_circa_s, 16, self.per_relu_s)

    # ---- prediction ----------------------------------------------------------------
    @staticmethod
    def _circa_coef(table: dict[int, float], l: int, fallback: float) -> float:
        """Coefficient for ``l`` kept bits: exact entry, else nearest measured l, else ReLU's."""
        if l in table:
            return table[l]
        if table:
            return table[min(table, key=lambda m: (abs(m - l), m))]
        return fallback

    def predict_counts(self, c: CostCounts) -> float:
        """Seconds per batch for the given drivers."""
        return (self.per_relu_s * c.relus + self.per_mult_s * c.poly_mults
                + self.per_mac_s * c.macs + self.per_round_s * c.rounds
                + self.per_inference_s * c.inferences
                + sum(self._circa_coef(self.per_circa_s, l, self.per_relu_s) * n
                      for l, n in c.circa.items()))

    def predict_bytes_counts(self, c: CostCounts) -> float:
        """Bytes sent per party per batch (rounds carry no bytes)."""
        return (self.per_relu_bytes * c.relus + self.per_mult_bytes * c.poly_mults
                + self.per_mac_bytes * c.macs + self.per_inference_bytes * c.inferences
                + sum(self._circa_coef(self.per_circa_bytes, l, self.per_relu_bytes) * n
                      for l, n in c.circa.items()))

    def predict(self, profile: ModelProfile, *, batch_size: int = 1,
                rounds: int | None = None, linear_layers: int = 0) -> float:
        """Online seconds per batch of ``batch_size`` for a pi_opt profile (loopback).

        See :func:`counts_from_profile` for ``rounds`` / ``linear_layers``; for ranking
        candidates of one architecture the defaults suffice.
        """
        return self.predict_counts(counts_from_profile(
            profile, batch_size=batch_size, rounds=rounds, linear_layers=linear_layers))

    def predict_bytes(self, profile: ModelProfile, *, batch_size: int = 1) -> float:
        return self.predict_bytes_counts(counts_from_profile(profile, batch_size=batch_size))

    def predict_network(self, counts: CostCounts, *, rtt_ms: float,
                        bandwidth_mbps: float) -> float:
        """``seconds + rounds * RTT + bytes / bandwidth`` for an emulated link."""
        return (self.predict_counts(counts) + counts.rounds * rtt_ms * 1e-3
                + self.predict_bytes_counts(counts) * 8.0 / (bandwidth_mbps * 1e6))

    # ---- persistence ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        return cls.model_validate_json(Path(path).read_text())


def estimate_rounds(profile: ModelProfile) -> int:
    """Rounds of the non-linear layers of a profile (linear-layer rounds not included).

    Per site, in execution order: exact ReLUs 9, polynomial squares 1, Circa
    ``3 + ceil(log2(l - 1))``; identity-only sites 0.
    """
    total = 0
    for s in profile.sites:
        if s.relu:
            total += RELU_ROUNDS
        if s.poly_mults:
            total += 1
        if s.circa:
            total += circa_rounds(s.circa_l or 64)
    return total


def counts_from_profile(profile: ModelProfile, *, batch_size: int = 1,
                        rounds: int | None = None, linear_layers: int = 0) -> CostCounts:
    """Cost drivers of one batch.

    ``rounds`` defaults to :func:`estimate_rounds` plus ``linear_layers`` (one Beaver
    round per conv/linear/standalone-BN layer with private weights; a profile does not
    list them) plus 1 for revealing the output. :func:`plan_counts` counts exactly.
    """
    circa: dict[int, float] = {}
    for s in profile.sites:
        if s.circa:
            l = s.circa_l or 64
            circa[l] = circa.get(l, 0.0) + s.circa * batch_size
    return CostCounts(
        relus=float((profile.exact_relus + profile.maxpool_comparisons) * batch_size),
        circa=circa, poly_mults=float(profile.poly_mults * batch_size),
        macs=float(profile.macs * batch_size),
        rounds=float(estimate_rounds(profile) + linear_layers + 1 if rounds is None else rounds),
        inferences=1.0,
    )


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
    "CostCounts", "CostSample", "LatencyModel", "circa_rounds", "counts_from_profile",
    "estimate_rounds", "fit", "plan_counts", "plan_rounds", "samples_from_ops",
]
