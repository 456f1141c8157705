"""Typed configuration of an optimization job (what a user writes in YAML / JSON)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pi_opt.artifacts import ModelSpec
from pi_opt.errors import ConfigError
from pi_opt.data import DatasetSpec
from pi_opt.network import PROFILES, NetworkProfile, resolve_network
from pi_opt.training import TrainConfig


class ChainSpec(BaseModel):
    """Techniques applied in order (e.g. ``["deepreshape", "autorep", "circa"]``).

    ``params`` fixes config fields per technique name; with ``search=True`` the
    remaining fields may be sampled by Optuna through each technique's ``suggest``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    chain: list[str] = Field(min_length=1)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    search: bool = True

    @property
    def label(self) -> str:
        """The chain as ``name+name+...``."""
        return "+".join(self.chain)


#: ``finetune.patience`` of a search unless the job sets it (``null`` turns it off): a quarter
#: of the fine-tune's epochs, at least ``FINETUNE_PATIENCE`` (2 on the 1-8 epoch fine-tunes of
#: the digits/shapes configs, where it was measured; 25 on the papers' 100-epoch fine-tunes, so
#: a CIFAR fine-tune is not stopped inside its noisy high-learning-rate phase).
FINETUNE_PATIENCE = 2
FINETUNE_PATIENCE_FRACTION = 0.25


def default_finetune_patience(epochs: int) -> int:
    """Plateau patience (epochs) of a search's fine-tunes of ``epochs`` epochs."""
    return max(FINETUNE_PATIENCE, math.ceil(FINETUNE_PATIENCE_FRACTION * epochs))


class SearchConfig(BaseModel):
    """An optimization job.

    finetune: every trial's training settings. ``finetune.patience`` (default in a search:
        a quarter of ``finetune.epochs``, at least 2, :func:`default_finetune_patience`;
        ``null`` = off) and ``finetune.min_delta`` stop a
        training at the trial's budget on a validation plateau (``TrainConfig``): every KD
        fine-tune / training of a candidate, and an AutoReP mask search once its gates meet
        the budget; the best epoch is kept. Counted in the compute block like any epoch.

    budgets: ReLU budgets; values <= 1 are fractions of the baseline's ReLU count,
        values > 1 absolute per-sample ReLU counts.
    n_trials: total trials (shared by all workers); default one per (chain, budget).
    objective: second objective next to validation accuracy: raw ReLU count or the
        cost model's latency estimate in seconds per sample
        (``pi_opt.costmodel.default_cost_model().predict``: ReLUs, Circa ReLUs by l,
        polynomial multiplications, MACs, rounds).
    pruning: early stopping of trials behind their budget bucket at the same progress
        (fraction of their planned training epochs; ``median`` or successive ``halving``,
        see ``pi_opt.search._pruning``); needs >= 2 budgets when set explicitly (with one
        budget the default is off). Default ``halving`` (``BENCHMARKS.md``, search
        efficiency). Under pruning, a grid trial is also skipped when the same chain at the
        nearest larger budget was pruned behind a peer with no more ReLUs, or its point
        would be dominated (``_pruning.skip_reason``).
    pruning_min_trials: finished trials of a bucket that must vote before it prunes.
    pruning_warmup: progress (fraction of a trial's planned epochs) before which no trial
        is pruned.
    max_class_drop: study constraint: the largest allowed drop of any class's validation
        accuracy against the baseline (fraction in (0, 1]); violating points stay in
        trials.csv but never reach the front.
    fairness_weight: > 0 fine-tunes with the classes the candidate harms most oversampled
        (``techniques._common.fairness_resample``); 0 = off.
    chain_slack: in a chain, a count-reducing technique followed by another one gets
        ``chain_slack x budget`` ReLUs; the last reducer meets the budget.
    network: link between client and server (``pi_opt.network``): ``loopback``, ``lan``,
        ``wan`` or ``{rtt_ms, bandwidth_mbps}``; ``objective: latency`` ranks candidates
        by the cost model's online seconds per sample on it, and SNL's and AutoReP's
        penalties add each site's rounds on it (``pi_opt.techniques._rounds``).
    latency_budgets_ms: latency budgets (ms per sample on ``network``) next to the ReLU
        budgets: each becomes the largest ReLU budget whose cheapest arrangement meets
        it (``pi_opt.costmodel.relu_budget_for_latency``), and the report answers it
        with the best point whose predicted latency fits. A budget below the model's
        linear-layer floor is a config error.
    """

    model_config = ConfigDict(extra="forbid")
    title: str = "pi-opt search"
    data: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec | None = None
    weights: str | None = None
    baseline: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=30, lr=0.05))
    finetune: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=8, lr=0.01, patience=default_finetune_patience(8)))
    techniques: list[ChainSpec] = Field(
        default_factory=lambda: [ChainSpec(chain=[t]) for t in ("snl", "autorep", "deepreduce",
                                                                  "deepreshape")])
    budgets: list[float] = Field(default_factory=lambda: [0.01, 0.05, 0.1, 0.25, 0.5])
    objective: Literal["relus", "cost", "latency"] = "relus"
    network: NetworkProfile = Field(default_factory=lambda: PROFILES["loopback"])
    latency_budgets_ms: list[float] = Field(default_factory=list)
    n_trials: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0
    harvest: bool = True
    chain_slack: float = Field(2.0, ge=1.0)
    measure_mpc: Literal["none", "front", "all"] = "none"
    pruning: Literal["none", "median", "halving"] = "halving"
    pruning_min_trials: int = Field(2, ge=1)
    pruning_warmup: float = Field(0.0, ge=0, lt=1)
    max_class_drop: float | None = Field(None, gt=0, le=1)
    fairness_weight: float = Field(0.0, ge=0)
    mpc: dict[str, Any] = Field(default_factory=dict)

    @field_validator("techniques", mode="before")
    @classmethod
    def _chains(cls, v: Any) -> Any:
        if not isinstance(v, list):  # pydantic reports the wrong type
            return v
        out = []
        for item in v or []:
            if isinstance(item, str):
                out.append({"chain": item.split("+")})
            elif isinstance(item, list):
                out.append({"chain": item})
            else:
                out.append(item)
        return out

    @field_validator("finetune", mode="before")
    @classmethod
    def _finetune_patience(cls, v: Any) -> Any:
        if isinstance(v, dict) and "patience" not in v:
            epochs = v.get("epochs", TrainConfig.model_fields["epochs"].default)
            if (isinstance(epochs, (int, float)) and not isinstance(epochs, bool)
                    and 0 <= epochs < 2**31):
                return {**v, "patience": default_finetune_patience(int(epochs))}
            return {**v, "patience": FINETUNE_PATIENCE}  # bad epochs: TrainConfig says why
        return v

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, v: Any) -> Any:
        try:
            return resolve_network(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @field_validator("latency_budgets_ms")
    @classmethod
    def _latency_budgets(cls, v: list[float]) -> list[float]:
        if any(not math.isfinite(b) or b <= 0 for b in v):
            raise ValueError("latency_budgets_ms must be finite and > 0 (milliseconds)")
        return sorted(set(v))

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one budget is required")
        if any(b <= 0 for b in v):
            raise ValueError("budgets must be positive (fractions <= 1 or absolute counts)")
        if not all(math.isfinite(b) for b in v):
            raise ValueError("budgets must be finite numbers")
        if any(b > 1 and b != int(b) for b in v):
            raise ValueError("budgets above 1 are absolute ReLU counts and must be integers "
                             f"(got {[b for b in v if b > 1 and b != int(b)]})")
        return sorted(set(v))

    @model_validator(mode="after")
    def _known(self) -> SearchConfig:
        from pi_opt.techniques import list_techniques

        known = set(list_techniques())
        for c in self.techniques:
            bad = [t for t in c.chain if t not in known]
            if bad:
                raise ValueError(f"unknown technique(s) {bad}; known: {sorted(known)}")
        if "pruning" in self.model_fields_set and self.pruning != "none" and len(
                self.budgets) < 2:
            raise ValueError(
                f"pruning: {self.pruning} compares trials within a budget bucket at the same "
                "epoch and needs at least 2 budgets; use 'pruning: none' with a single budget")
        if self.weights is not None and self.model is None:
            raise ValueError("'weights' needs 'model' (the architecture spec they belong to)")
        return self

    def effective_pruning(self) -> Literal["none", "median", "halving"]:
        """The pruning rule in force (``none`` for a single budget under the default)."""
        return self.pruning if len(self.budgets) >= 2 else "none"

    def absolute_budgets(self, baseline_relus: int) -> list[int]:
        """Budgets as sorted, distinct per-sample ReLU counts: values <= 1 are fractions of
        ``baseline_relus`` (rounded, at least 1), larger values are counts.
        """
        out = {max(1, int(round(b * baseline_relus))) if b <= 1 else int(b) for b in self.budgets}
        return sorted(out)
