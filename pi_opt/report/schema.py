"""The versioned Pareto report: pure data, computed before any rendering.

Units: ``relus`` etc. are per-sample element counts; ``macs`` per sample;
accuracies are fractions in [0, 1]; latency in seconds; bytes per party.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MpcMeasurement(_Model):
    """Encrypted-inference cost of one model, as measured by an MPC backend."""

    backend: str                       # e.g. "crypten-0.4.1"
    provider: str                      # "TFP" | "TTP"
    device: str                        # "cpu" | "cuda"
    parties: int = 2
    batch_size: int = 1
    latency_s: float                   # online wall time per batch (median)
    latency_min_s: float | None = None  # fastest / slowest of the ``repeats`` timed runs
    latency_max_s: float | None = None
    latency_linear_s: float | None = None
    latency_nonlinear_s: float | None = None
    rounds: int                        # communication rounds per batch (party 0)
    bytes_per_party: int               # bytes sent by party 0 per batch
    bytes_linear: int | None = None
    bytes_nonlinear: int | None = None
    network: dict[str, float] | None = None   # link {"rtt_ms":..., "bandwidth_mbps":...}
    network_emulated: bool = False            # latency_s measured on that emulated link
    estimated_lan_s: float | None = None
    estimated_wan_s: float | None = None
    plaintext_agreement: float | None = None  # argmax agreement with the plaintext model
    max_logit_error: float | None = None
    repeats: int = 1


class SiteKept(_Model):
    """Per-sample element counts of one site by kind (``elements`` = all of them)."""

    name: str
    stage: str
    elements: int
    relu: int
    circa: int
    poly: int
    identity: int


class ParetoPoint(_Model):
    """One evaluated candidate (every trial appears; ``pareto`` marks the front)."""

    trial: int
    chain: list[str]                    # techniques applied in order, e.g. ["deepreshape", "autorep"]
    params: dict[str, Any] = Field(default_factory=dict)
    budget: int                         # requested ReLU budget
    relus: int                          # counted on the saved artifact (exact + Circa)
    circa_relus: int = 0
    poly_mults: int = 0
    macs: int
    cost: float | None = None           # cost-model estimate (seconds) when available
    # predicted online seconds per sample: {"loopback", "lan", "wan", "job" (the job's network)}
    latency_s: dict[str, float] | None = None
    val_accuracy: float
    test_accuracy: float
    per_class_test_accuracy: list[float] = Field(default_factory=list)
    sites: list[SiteKept] = Field(default_factory=list)
    artifact: str | None = None         # path relative to the job directory
    harvested_from: int | None = None   # trial that produced this as a by-product (SNL snapshots)
    tuned: bool = False                 # hyperparameters sampled (False: technique defaults)
    pareto: bool = False
    seconds: float | None = None        # wall time spent on this candidate
    mpc: MpcMeasurement | None = None
    # search efficiency and fairness (pi_opt.search)
    compute: dict[str, Any] | None = None  # per phase {"epochs", "images", "seconds"}
    pruned: bool = False                # stopped early behind its budget bucket: never on the front
    pruned_at_epoch: int | None = None  # training epochs of the trial when it was stopped
    worst_class_drop: float | None = None  # largest per-class val accuracy drop vs baseline
    feasible: bool = True               # meets max_class_drop: infeasible points never on the front


class Baseline(_Model):
    """The unreduced model: ReLUs and MACs per sample, accuracies (fractions), per-class
    test accuracy, optional artifact path and MPC measurement.
    """

    arch: dict[str, Any]
    relus: int
    macs: int
    val_accuracy: float
    test_accuracy: float
    per_class_test_accuracy: list[float]
    artifact: str | None = None
    mpc: MpcMeasurement | None = None


class BudgetAnswer(_Model):
    """Best front point under each requested budget, or the closest one above it."""

    budget: int
    met: bool
    trial: int | None
    relus: int | None
    test_accuracy: float | None
    gap_relus: int | None = None        # how far above budget the closest point is when not met


class LatencyBudgetAnswer(_Model):
    """Best front point whose predicted latency on the job's network fits a latency budget."""

    budget_ms: float
    met: bool
    trial: int | None
    latency_ms: float | None            # predicted on the job's network
    relus: int | None
    test_accuracy: float | None


class ParetoReport(_Model):
    """``pareto.json``: a job's settings, baseline and every evaluated point; the source all
    renderers (HTML, PNG, CSV) read.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    title: str
    created_at: str                     # ISO 8601 UTC
    job_id: str | None = None
    dataset: dict[str, Any]             # {"name", "num_classes", "class_names", "sizes": {...}}
    objective: str                      # "relus" | "cost" | "latency"
    counting: str                       # the counting convention, human readable
    budgets: list[int]
    techniques: list[list[str]]
    search: dict[str, Any]              # sampler, n_trials, seed, wall time, ...
    software: dict[str, str]            # versions: pi_opt, torch, optuna, python, (crypten)
    baseline: Baseline
    points: list[ParetoPoint]
    answers: list[BudgetAnswer] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)   # {"trial", "chain", "error"}
    # grid trials not run (cross-budget skipping): {"trial", "chain", "budget", "reason"}
    skipped: list[dict[str, Any]] = Field(default_factory=list)
    compute: dict[str, Any] = Field(default_factory=dict)  # data, baseline, trials, mpc, total
    network: dict[str, Any] | None = None  # the job's link (pi_opt.network.NetworkProfile)
    latency_answers: list[LatencyBudgetAnswer] = Field(default_factory=list)

    def front(self) -> list[ParetoPoint]:
        """The Pareto-front points, by increasing ReLU count."""
        return sorted((p for p in self.points if p.pareto), key=lambda p: p.relus)
