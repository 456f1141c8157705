"""The linear cost model of encrypted inference: the one evaluator of MPC cost.

``seconds = per_relu * relus + sum_l per_circa[l] * circa_l + per_mult * poly_mults
          + per_mac * macs + per_round * rounds + per_inference * inferences``

and the same form for ``bytes`` (bytes sent per party; rounds carry no bytes). Circa
costs are keyed by ``l`` (bits kept): the protocol's rounds and bytes depend on ``l``
only, ``k`` changes the fault rate, not the cost. Max-pool comparisons are costed as
exact ReLUs. The per-inference term absorbs input sharing, output reveal and
interpreter overhead.

pi_opt only evaluates the model (numpy/pydantic; it never imports ``mpc`` or
crypten): the search ranks candidates with :meth:`LatencyModel.predict` when
``objective == "cost"``. Coefficients are fitted to real CrypTen measurements by
:func:`mpc.latency_model.fit` (``bench/mpc_fit_latency.py``), which writes
``configs/latency/crypten_cpu.json`` and the package copy
``pi_opt/costmodels/crypten_cpu.json`` read by :func:`default_cost_model`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pi_opt.circa_faults import circa_rounds
from pi_opt.profile import ModelProfile

#: Rounds of CrypTen's exact ReLU layer (A2B, 7 AND levels, B2A, multiply).
RELU_ROUNDS = 9

#: File name of the committed CrypTen CPU fit, shipped as ``pi_opt/costmodels/<name>``
#: (package data) and kept identical to ``configs/latency/<name>``.
DEFAULT_MODEL_FILE = "crypten_cpu.json"


class CostCounts(BaseModel):
    """Cost drivers of one sample (per batch). Circa counts are keyed by ``l``."""

    model_config = ConfigDict(extra="forbid")
    relus: float = 0.0
    circa: dict[int, float] = Field(default_factory=dict)
    poly_mults: float = 0.0
    macs: float = 0.0
    rounds: float = 0.0
    inferences: float = 0.0


class LatencyModel(BaseModel):
    """Fitted coefficients: seconds (and bytes sent per party) per unit of each driver."""

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
        """Online seconds per batch of ``batch_size`` for a pi_opt profile (loopback);
        at the default ``batch_size=1``, seconds per sample.

        See :func:`counts_from_profile` for ``rounds`` / ``linear_layers``; for ranking
        candidates of one architecture the defaults suffice.
        """
        return self.predict_counts(counts_from_profile(
            profile, batch_size=batch_size, rounds=rounds, linear_layers=linear_layers))

    def predict_bytes(self, profile: ModelProfile, *, batch_size: int = 1) -> float:
        """Bytes sent per party per batch of ``batch_size`` for a pi_opt profile."""
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
    :func:`pi_opt.circa_faults.circa_rounds` (``3 + ceil(log2(l - 1))``); identity-only sites 0.
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
    list them) plus 1 for revealing the output. ``mpc.latency_model.plan_counts``
    counts exactly from a lowered plan.
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


# ---- the committed fit -----------------------------------------------------------------
#: Coefficients of the committed ``configs/latency/crypten_cpu.json`` (copied verbatim;
#: ``tests/test_costmodel.py`` checks they match the shipped file). Used only when the
#: package data file is missing (e.g. a source tree without it).
_COMMITTED: dict[str, Any] = {
    "source": "bench/mpc_fit_latency.py (crypten 0.4.1, TFP, private weights, CPU loopback, "
              "1 thread/party)",
    "per_relu_s": 1.6898171710328965e-6,
    "per_circa_s": {4: 2.0219444644620642e-7, 8: 2.4175391573335495e-7,
                    16: 4.0795150803489004e-7, 32: 1.3387532743117425e-6,
                    64: 3.261964623596955e-6},
    "per_mult_s": 1.1036711928669893e-7,
    "per_mac_s": 9.731725659355485e-10,
    "per_round_s": 0.0031183770711443563,
    "per_inference_s": 0.04879264561998255,
    "per_relu_bytes": 231.88006682372153,
    "per_circa_bytes": {4: 21.12504, 8: 30.12504, 16: 52.12504, 32: 104.12503999999979,
                        64: 224.1250400000023},
    "per_mult_bytes": 8.000000000000007,
    "per_mac_bytes": 0.04772977382974277,
    "per_inference_bytes": 5068302.7883815905,
}


def default_model_text() -> str | None:
    """JSON of the committed fit: the package copy ``pi_opt/costmodels/crypten_cpu.json``
    (present in installed wheels too), else the checkout's ``configs/latency/`` file;
    None when neither exists."""
    shipped = resources.files("pi_opt").joinpath("costmodels", DEFAULT_MODEL_FILE)
    if shipped.is_file():
        return shipped.read_text()
    repo = Path(__file__).resolve().parent.parent / "configs" / "latency" / DEFAULT_MODEL_FILE
    return repo.read_text() if repo.is_file() else None


def default_cost_model() -> LatencyModel:
    """The committed CrypTen CPU fit (see :func:`default_model_text`); if no file is
    present, a model with the same committed coefficients (without the fit's ``meta``)."""
    text = default_model_text()
    if text is not None:
        return LatencyModel.model_validate_json(text)
    return LatencyModel.model_validate(_COMMITTED)


__all__ = [
    "DEFAULT_MODEL_FILE", "RELU_ROUNDS", "CostCounts", "LatencyModel", "circa_rounds",
    "counts_from_profile", "default_cost_model", "default_model_text", "estimate_rounds",
]
