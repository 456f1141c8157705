"""The cost model of encrypted inference (CrypTen 2PC): the one evaluator of MPC cost.

**Rounds and bytes are counted, not fitted.** They follow from the protocol CrypTen
(and :mod:`mpc`) runs for each layer of the model's structure - the profile's ReLU
sites plus its :class:`~pi_opt.layers.LayerProfile` s:

============================  ======================================  ====================
layer                         rounds                                  bytes sent per party
============================  ======================================  ====================
input sharing                 0 (pseudo-random zero shares)           0
conv / linear / unfolded BN   1 (Beaver product, private weights)     8 * (B*input + weight)
exact ReLU (n elements)       9 (A2B, 7 AND levels, B2A, multiply)    232 * n
square (polynomial, n)        1                                       8 * n
Circa, l bits kept (n)        3 + ceil(log2(l - 1))                   :func:`circa_bytes`
max-pool (k*k window)         :func:`maxpool_cost` (57 for 3x3)       per output window
reveal of the output (n)      1                                       4 * n
============================  ======================================  ====================

(bytes as CrypTen counts them for one party, divided by 2: what each party sends.) A
site that mixes exact ReLU, squares and Circa runs the three sub-protocols in *shared*
rounds (the rounds of the longest, not the sum), as the MPC backend executes them.
With public weights linear layers are local (0 rounds, 0 bytes).

**Only time is fitted** (seconds per batch on loopback, 1 thread per party)::

    seconds = per_relu_s * relus + sum_l per_circa_s[l] * circa_l + per_mult_s * squares
            + per_mac_s * macs + per_byte_s * bytes + per_round_s * rounds
            + per_fused_round_s * fused_rounds + per_inference_s

``fused_rounds``: rounds of a mixed site's shorter sub-protocols, run inside the longest
one's rounds - no message exchange of their own, but their local work per round remains.

and on a link (:mod:`pi_opt.network`), layer by layer, ``+ rounds * max(0, RTT + bytes /
rounds / bandwidth - hidden_per_round_s)``: the one network-side coefficient,
``hidden_per_round_s``, is the delay per round that overlaps the peer's compute, fitted
on emulated links (``bench/latency_emulated.py --set fit``, then
``bench/mpc_fit_latency.py --links``); 0 gives the additive ``rounds * RTT + bytes /
bandwidth``.

pi_opt only evaluates the model (never imports ``mpc`` or crypten): the search ranks
candidates with :meth:`LatencyModel.predict` (``objective: cost``) or
:meth:`LatencyModel.predict_network` (``objective: latency``). ``mpc.latency_model``
builds the same :class:`CostCounts` from a lowered plan and fits the time coefficients
(``bench/mpc_fit_latency.py`` writes ``configs/latency/crypten_cpu.json`` and the
package copy ``pi_opt/costmodels/crypten_cpu.json`` read by :func:`default_cost_model`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pi_opt.circa_faults import carry_levels, circa_rounds
from pi_opt.layers import LayerProfile
from pi_opt.network import NetworkProfile
from pi_opt.profile import ModelProfile, SiteProfile

#: Rounds of CrypTen's exact ReLU layer (A2B, 7 AND levels, B2A, multiply).
RELU_ROUNDS = 9

#: File name of the committed CrypTen CPU fit, shipped as ``pi_opt/costmodels/<name>``
#: (package data) and kept identical to ``configs/latency/<name>``.
DEFAULT_MODEL_FILE = "crypten_cpu.json"

WeightsMode = Literal["private", "public"]

# Protocol constants in *opened words*: one int64 opened in an exchange is counted by
# CrypTen as 16 bytes (sent + received) for each party, i.e. 8 bytes sent per party.
_WORD = 8.0
_LTZ_WORDS = 27          # A2B adder: 2 (first AND) + 6 levels x 4, + 1 (B2A)
_MUL_WORDS = 2           # Beaver product: open x - a and y - b
_RELU_WORDS = _LTZ_WORDS + _MUL_WORDS
_EQ_WORDS = 13           # 2PC equality: 6 AND levels x 2, + 1 (B2A)
_RAND_WORDS = 16         # crypten.rand per row of weighted_index
_LTZ_ROUNDS, _EQ_ROUNDS = 8, 7


class Cost(BaseModel):
    """Communication of one layer for a batch: ``rounds`` (sequential message exchanges)
    and ``bytes`` sent per party; ``+`` adds both (layers run one after another)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rounds: int = 0
    bytes: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(rounds=self.rounds + other.rounds, bytes=self.bytes + other.bytes)


def relu_cost(n: int) -> Cost:
    """CrypTen's exact ReLU on ``n`` elements (all elements of a batch: per-sample count x
    batch size): :data:`RELU_ROUNDS` rounds, a fixed number of 8-byte words per element."""
    return Cost(rounds=RELU_ROUNDS, bytes=_RELU_WORDS * _WORD * n) if n else Cost()


def square_cost(n: int) -> Cost:
    """Secure squares of ``n`` elements: 1 round, one 8-byte word opened per element."""
    return Cost(rounds=1, bytes=_WORD * n) if n else Cost()


def circa_bytes(n: int, l: int) -> float:
    """Bytes sent per party by the truncated-sign ReLU (:mod:`mpc.circa_sign`) on ``n``
    elements keeping ``l`` bits: ``64 // l`` lanes packed per word through the carry
    prefix, sign bits packed 64 per word for B2A, one Beaver product per element."""
    if n == 0:
        return 0.0
    words = -(-n // (64 // l))
    opened = 2 * words + 4 * carry_levels(l) * words + -(-n // 64) + _MUL_WORDS * n
    return _WORD * opened


def circa_cost(n: int, l: int) -> Cost:
    """Rounds and bytes per party of Circa's truncated-sign ReLU on ``n`` elements keeping
    ``l`` bits (zero cost for 0 elements).
    """
    return Cost(rounds=circa_rounds(l), bytes=circa_bytes(n, l)) if n else Cost()


def beaver_cost(input_elements: int, weight_elements: int, *,
                weights: WeightsMode = "private") -> Cost:
    """A product with the server's weights: opens the input and the weight once."""
    if weights == "public":
        return Cost()
    return Cost(rounds=1, bytes=_WORD * (input_elements + weight_elements))


def maxpool_cost(windows: int, window: int) -> Cost:
    """CrypTen's ``max_pool2d`` (``log_reduction``) over ``windows`` windows of
    ``window`` elements: ``int(ln n)`` halving steps (compare + 2-product select), a
    pairwise compare of the rest with a product tree, the max as a product with the
    sampled one-hot, then the one-hot over the whole window (equality + sampling).
    """
    if windows == 0:
        return Cost()
    n, words, rounds = window, 0, 0
    m = n
    for _ in range(int(math.log(n))):
        pairs = m // 2
        words += pairs * (_LTZ_WORDS + 2 * _MUL_WORDS)
        rounds += _LTZ_ROUNDS + 2
        m = pairs + m % 2
    rows = max(m, 2) - 1                         # pairwise: each element vs the others
    words += _LTZ_WORDS * rows * m
    rounds += _LTZ_ROUNDS
    while rows > 1:                              # product of the comparisons
        words += (rows // 2) * m * _MUL_WORDS
        rows = rows // 2 + rows % 2
        rounds += 1
    sample = _RAND_WORDS + _MUL_WORDS             # weighted_index: r * max weight per row
    words += sample + _LTZ_WORDS * m + _MUL_WORDS * m   # one-hot of the rest; max = x . one-hot
    rounds += 1 + _LTZ_ROUNDS + 1 + 1
    words += sample + _LTZ_WORDS * n             # one-hot over the whole window
    rounds += 1 + _LTZ_ROUNDS + 1
    words += _EQ_WORDS * n                       # one-hot of the max over the window
    rounds += _EQ_ROUNDS
    return Cost(rounds=rounds, bytes=_WORD * words * windows)


def reveal_cost(n: int) -> Cost:
    """The server's share of ``n`` output elements sent to the client (one reduce)."""
    return Cost(rounds=1, bytes=_WORD * n / 2)


def _site_parts(relu: int, squares: int, circa: int, circa_l: int | None) -> list[Cost]:
    """Exact-ReLU, square and Circa sub-protocols of a site (element counts of a batch)."""
    return [relu_cost(relu), square_cost(squares), circa_cost(circa, circa_l or 64)]


def site_cost(site: SiteProfile, batch_size: int = 1) -> Cost:
    """One site for ``batch_size`` samples: its exact-ReLU, polynomial-square and Circa
    elements run in parallel (rounds = the slowest part's, bytes per party summed)."""
    b = batch_size
    parts = _site_parts(site.relu * b, site.poly_mults * b, site.circa * b, site.circa_l)
    return Cost(rounds=max(p.rounds for p in parts), bytes=sum(p.bytes for p in parts))


def fused_rounds(*, relu: int, squares: int, circa: int, circa_l: int | None) -> int:
    """Rounds of a mixed site's sub-protocols that run inside the longest one's rounds
    (sum of the parts' rounds minus the shared rounds; 0 for a single-kind site)."""
    rounds = [p.rounds for p in _site_parts(relu, squares, circa, circa_l)]
    return sum(rounds) - max(rounds)


def layer_cost(layer: LayerProfile, batch_size: int = 1, *,
               weights: WeightsMode = "private") -> Cost:
    """Rounds and bytes per party of one profiled layer for ``batch_size`` samples: a Beaver
    product for linear layers, max-pool comparisons, else an exact ReLU per output element.
    """
    b = batch_size
    if layer.kind == "linear":
        return beaver_cost(layer.input_elements * b, layer.weight_elements, weights=weights)
    if layer.kind == "max_pool":
        return maxpool_cost(layer.output_elements * b, layer.window)
    return relu_cost(layer.output_elements * b)


class CostCounts(BaseModel):
    """Cost drivers of one batch. Circa counts are keyed by ``l``; ``bytes``: sent per
    party; ``linear_rounds``: rounds of conv/linear/BN layers (the linear floor);
    ``traffic``: ``(rounds, bytes)`` of each communicating layer / site / the reveal
    (summing to ``rounds`` and ``bytes``), how a link sees the messages - empty means
    one group of ``rounds`` rounds sharing ``bytes`` evenly."""

    model_config = ConfigDict(extra="forbid")
    relus: float = 0.0
    circa: dict[int, float] = Field(default_factory=dict)
    poly_mults: float = 0.0
    macs: float = 0.0
    rounds: float = 0.0
    bytes: float = 0.0
    inferences: float = 0.0
    linear_rounds: float = 0.0
    linear_bytes: float = 0.0
    fused_rounds: float = 0.0
    traffic: list[tuple[float, float]] = Field(default_factory=list)

    def traffic_groups(self) -> list[tuple[float, float]]:
        """``traffic``, or the whole batch as one ``(rounds, bytes)`` group."""
        return self.traffic or [(self.rounds, self.bytes)]


class LatencyModel(BaseModel):
    """Fitted time coefficients (seconds per unit of each driver, loopback), and
    ``hidden_per_round_s``: seconds of a link's delay per round that overlap the parties'
    compute (fitted on emulated links; 0 = none, the additive network rule)."""

    model_config = ConfigDict(extra="forbid")
    source: str = "unfitted"
    per_relu_s: float = 0.0
    per_circa_s: dict[int, float] = Field(default_factory=dict)
    per_mult_s: float = 0.0
    per_mac_s: float = 0.0
    per_byte_s: float = 0.0
    per_round_s: float = 0.0
    per_fused_round_s: float = 0.0
    per_inference_s: float = 0.0
    hidden_per_round_s: float = Field(0.0, ge=0.0)
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
        """Seconds per batch on loopback for the given drivers."""
        return (self.per_relu_s * c.relus + self.per_mult_s * c.poly_mults
                + self.per_mac_s * c.macs + self.per_byte_s * c.bytes
                + self.per_round_s * c.rounds + self.per_fused_round_s * c.fused_rounds
                + self.per_inference_s * c.inferences
                + sum(self._circa_coef(self.per_circa_s, l, self.per_relu_s) * n
                      for l, n in c.circa.items()))

    def predict(self, profile: ModelProfile, *, batch_size: int = 1,
                weights: WeightsMode = "private") -> float:
        """Online seconds per batch of ``batch_size`` on loopback (batch 1: per sample)."""
        return self.predict_counts(counts_from_profile(profile, batch_size=batch_size,
                                                       weights=weights))

    def predict_bytes(self, profile: ModelProfile, *, batch_size: int = 1,
                      weights: WeightsMode = "private") -> float:
        """Bytes sent per party per batch (counted from the protocol, not fitted)."""
        return counts_from_profile(profile, batch_size=batch_size, weights=weights).bytes

    def link_s(self, counts: CostCounts, network: NetworkProfile) -> float:
        """Seconds ``network`` adds to a batch: per traffic group, ``rounds * max(0, RTT +
        bytes / rounds / bandwidth - hidden_per_round_s)`` (:mod:`pi_opt.network`)."""
        return network.traffic_s(counts.traffic_groups(), hidden_s=self.hidden_per_round_s)

    def predict_network(self, counts: CostCounts, network: NetworkProfile) -> float:
        """Seconds per batch on ``network``: loopback time + :meth:`link_s`."""
        return self.predict_counts(counts) + self.link_s(counts, network)

    def predict_latency(self, profile: ModelProfile, network: NetworkProfile, *,
                        batch_size: int = 1, weights: WeightsMode = "private") -> float:
        """:meth:`predict_network` of a profile."""
        return self.predict_network(
            counts_from_profile(profile, batch_size=batch_size, weights=weights), network)

    # ---- persistence ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model as indented JSON to ``path`` (parent folders created)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        """Read a model written by :meth:`save`.

        Raises OSError when the file cannot be read, ValidationError when it is invalid.
        """
        return cls.model_validate_json(Path(path).read_text())


def estimate_rounds(profile: ModelProfile) -> int:
    """Rounds of all ReLU sites of a profile, sites in sequence (rounds within a site are
    shared); independent of the batch size."""
    return sum(site_cost(s).rounds for s in profile.sites)


def structure_counts(sites: Iterable[SiteProfile], layers: Iterable[LayerProfile],
                     output_elements: int, *, macs: int, batch_size: int = 1,
                     weights: WeightsMode = "private") -> CostCounts:
    """Cost drivers of one batch of a model given as sites + layers (per-sample counts).

    The one place that turns structure into counts: profiles
    (:func:`counts_from_profile`) and lowered MPC plans both come through here.
    """
    b = batch_size
    total = reveal_cost(output_elements * b)
    traffic = [total]
    linear = Cost()
    relus = 0
    circa: dict[int, float] = {}
    squares = fused = 0
    for site in sites:
        traffic.append(site_cost(site, b))
        total = total + traffic[-1]
        fused += fused_rounds(relu=site.relu, squares=site.poly_mults, circa=site.circa,
                              circa_l=site.circa_l)
        relus += site.relu * b
        squares += site.poly_mults * b
        if site.circa:
            l = site.circa_l or 64
            circa[l] = circa.get(l, 0.0) + site.circa * b
    for layer in layers:
        cost = layer_cost(layer, b, weights=weights)
        traffic.append(cost)
        total = total + cost
        if layer.kind == "linear":
            linear = linear + cost
        elif layer.kind == "relu":
            relus += layer.output_elements * b
        else:
            relus += layer.output_elements * b * (layer.window - 1)
    return CostCounts(relus=float(relus), circa=circa, poly_mults=float(squares),
                      macs=float(macs * b), rounds=float(total.rounds), bytes=total.bytes,
                      inferences=1.0, linear_rounds=float(linear.rounds),
                      linear_bytes=linear.bytes, fused_rounds=float(fused),
                      traffic=[(float(c.rounds), c.bytes) for c in traffic if c.rounds or c.bytes])


def counts_from_profile(profile: ModelProfile, *, batch_size: int = 1,
                        weights: WeightsMode = "private") -> CostCounts:
    """Cost drivers of one batch of a profiled model.

    A profile without layer structure (a model fx cannot trace, or one saved before
    profiles carried it) counts its sites, max-pool comparisons as exact ReLUs and one
    output reveal of 0 elements: a lower bound.
    """
    if profile.layers is None:
        c = structure_counts(profile.sites, [], 0, macs=profile.macs,
                             batch_size=batch_size, weights=weights)
        extra = relu_cost(profile.maxpool_comparisons * batch_size)
        return c.model_copy(update={
            "relus": c.relus + profile.maxpool_comparisons * batch_size,
            "bytes": c.bytes + extra.bytes,
            "traffic": [*c.traffic, (0.0, extra.bytes)] if extra.bytes else c.traffic})
    return structure_counts(profile.sites, profile.layers, profile.output_elements or 0,
                            macs=profile.macs, batch_size=batch_size, weights=weights)


# ---- latency budgets -------------------------------------------------------------------


def linear_floor_explained(model: LatencyModel, profile: ModelProfile,
                           network: NetworkProfile) -> tuple[float, str]:
    """(seconds, explanation) of the linear-layer floor of ``profile`` on ``network``."""
    bare = profile.model_copy(update={"sites": []})
    c = counts_from_profile(bare)
    c = c.model_copy(update={"relus": 0.0, "circa": {}, "poly_mults": 0.0,
                             "fused_rounds": 0.0})
    floor = model.predict_network(c, network)
    why = (f"{floor * 1e3:.1f} ms on {network.label()}: with every ReLU removed the model "
           f"still runs its linear layers ({c.linear_rounds:.0f} Beaver rounds, "
           f"{c.linear_bytes / 1e6:.2f} MB sent per party), max-pools and the output reveal "
           f"({c.rounds:.0f} rounds, {c.bytes / 1e6:.2f} MB in all)")
    return floor, why


def _concentrated_counts(profile: ModelProfile, relus: int) -> CostCounts:
    """Drivers of ``profile`` keeping ``relus`` exact ReLUs in as few sites as possible
    (largest sites first): the cheapest arrangement of that many ReLUs."""
    left = relus
    sites = []
    for s in sorted(profile.sites, key=lambda s: -s.elements):
        take = min(left, s.elements)
        sites.append(s.model_copy(update={"relu": take, "circa": 0, "poly_mults": 0}))
        left -= take
    return counts_from_profile(profile.model_copy(update={"sites": sites}))


def relu_budget_for_latency(model: LatencyModel, profile: ModelProfile,
                            network: NetworkProfile, budget_s: float) -> int:
    """The largest ReLU count whose cheapest arrangement (fewest sites) meets
    ``budget_s`` seconds per sample on ``network`` (0 when only the bare linear
    model fits). A technique then searches that ReLU budget; whether its candidate
    meets the latency budget is read off the candidate's own prediction.

    Raises :class:`~pi_opt.errors.ConfigError` when ``budget_s`` is below the linear
    floor (:func:`linear_floor_explained`).
    """
    from pi_opt.errors import ConfigError

    floor, why = linear_floor_explained(model, profile, network)
    if budget_s < floor:
        raise ConfigError(f"latency budget {budget_s * 1e3:g} ms is below the model's "
                          f"linear-layer floor of {why}", budget_ms=budget_s * 1e3,
                          floor_ms=floor * 1e3)
    lo, hi = 0, sum(s.elements for s in profile.sites)
    while lo < hi:  # largest R with latency(R) <= budget; latency is monotone in R
        mid = (lo + hi + 1) // 2
        if model.predict_network(_concentrated_counts(profile, mid), network) <= budget_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def point_latencies(model: LatencyModel, profile: ModelProfile,
                    network: NetworkProfile) -> dict[str, float]:
    """Predicted seconds per sample on loopback, LAN, WAN and ``network`` (key ``job``)."""
    from pi_opt.network import PROFILES, REPORTED

    c = counts_from_profile(profile)
    out = {name: model.predict_network(c, PROFILES[name]) for name in REPORTED}
    out["job"] = model.predict_network(c, network)
    return out


# ---- the committed fit -----------------------------------------------------------------
#: Coefficients of the committed ``configs/latency/crypten_cpu.json`` (copied verbatim;
#: ``tests/test_costmodel.py`` checks they match the shipped file). Used only when the
#: package data file is missing (e.g. a source tree without it).
_COMMITTED: dict[str, Any] = {
    "source": "bench/mpc_fit_latency.py (crypten 0.4.1, TFP, private weights, CPU loopback, "
              "1 thread/party)",
    "per_relu_s": 0.0,
    "per_circa_s": {4: 8.275029566818358e-08, 8: 1.004540771854709e-07,
                    16: 0.0, 32: 0.0,
                    64: 2.1880982587534864e-07},
    "per_mult_s": 2.270661731792099e-08,
    "per_mac_s": 1.274336770000175e-08,
    "per_byte_s": 1.1696733851582674e-08,
    "per_round_s": 0.004382181485935928,
    "per_fused_round_s": 0.003523836525726431,
    "per_inference_s": 0.004463313328095465,
    "hidden_per_round_s": 0.001654,
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
    "DEFAULT_MODEL_FILE", "RELU_ROUNDS", "Cost", "CostCounts", "LatencyModel", "WeightsMode",
    "beaver_cost", "circa_bytes", "circa_cost", "circa_rounds", "counts_from_profile",
    "default_cost_model", "default_model_text", "estimate_rounds", "fused_rounds", "layer_cost",
    "linear_floor_explained", "maxpool_cost", "point_latencies", "relu_budget_for_latency",
    "relu_cost", "reveal_cost", "site_cost", "square_cost", "structure_counts",
]
