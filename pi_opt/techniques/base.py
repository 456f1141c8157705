"""Technique plugin contract and registry.

A technique turns a starting :class:`Candidate` (the trained all-ReLU baseline, or
the output of the previous technique in a chain) into reduced candidates whose
per-sample ReLU count (exact + Circa, as counted by ``pi_opt.profile``) is at
most the requested budget. Techniques never touch the test split: they select
on ``ctx.data.val``. The search engine saves, reloads, counts and tests every
candidate itself, so a technique cannot misreport its budget.

Register with::

    @register_technique
    class MyTechnique(Technique):
        name = "mine"
        Config = MyConfig          # pydantic model, extra="forbid"
        def run(self, ctx, start, *, budget): ...
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from torch import nn

from pi_opt.artifacts import ModelSpec
from pi_opt.costmodel import LatencyModel
from pi_opt.data import DataBundle
from pi_opt.errors import ConfigError
from pi_opt.network import NetworkProfile
from pi_opt.profile import ModelProfile, profile_model
from pi_opt.registry import Registry
from pi_opt.training import TrainConfig, TrainingCheckpoints
from pi_opt.training._loops import ProgressFn, StopFn


PresetName = Literal["fast", "paper"]


class TechniqueConfig(BaseModel):
    """Base of every technique config: keyword-only, typed, no unknown keys.

    ``preset`` selects the parameter table the unset fields come from:

    * ``fast`` (default): the class defaults - scale-correct (they behave the same at
      2K and 500K ReLUs) and sized for short searches;
    * ``paper``: the published method's values (``PRESETS["paper"]``, with the
      source of each value in the class doc), for reproducing its tables.

    Fields given explicitly always win over the preset, e.g.
    ``SNLConfig(preset="paper", max_search_epochs=300)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: preset name -> field values; ``fast`` is the class defaults.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    preset: PresetName = "fast"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset", "fast") != "fast":
            return {**cls.PRESETS.get(str(data["preset"]), {}), **data}
        return data


@dataclass(frozen=True)
class LatencyObjective:
    """What ``objective: latency`` tells a technique: the job's link and the cost model
    the search ranks candidates with (round-aware penalties price rounds with them)."""

    network: NetworkProfile
    cost_model: LatencyModel


@dataclass
class TechniqueContext:
    """Shared inputs of one search.

    teacher: trained all-ReLU baseline (prepared, materialized, eval mode). Read only.
    finetune: the per-candidate epoch budget and optimizer settings.
    workdir: a directory for cached, reusable computations (e.g. stage criticality).
    seed: this trial's seed; job_seed: the job's seed, for computations shared by trials.
    checkpoints: the trial's per-epoch training checkpoints (None: none are written). The
    search keeps them for a re-run of a trial whose worker died, so every training of the
    trial (``_common.distill``, the mask searches: :meth:`checkpoint`) resumes instead of
    starting over; techniques keep state that lives outside the model in
    ``TrainHooks.save_state`` / ``load_state``.
    """

    spec: ModelSpec
    data: DataBundle
    teacher: nn.Module
    baseline_profile: ModelProfile
    finetune: TrainConfig
    workdir: Path
    seed: int = 0
    job_seed: int = 0  # seed of cached, trial-independent computations (criticality)
    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    #: The search's early-stopping channel of this trial (None: nothing listens).
    early_stop: EarlyStop | None = None
    #: Fairness-aware fine-tune: > 0 oversamples the classes the candidate harms most
    #: (``_common.fairness_resample``); 0 trains on the data as is.
    fairness_weight: float = 0.0
    #: Set when the job's objective is ``latency``: learned-mask techniques (SNL, AutoReP)
    #: then add each site's rounds on this link to their penalty (``_rounds``); None keeps
    #: the ReLU-count penalties unchanged.
    latency: LatencyObjective | None = None
    checkpoints: TrainingCheckpoints | None = None

    def checkpoint(self, phase: str) -> Path | None:
        """Checkpoint directory of the trial's next training of ``phase`` (for
        ``fit(checkpoint=...)``), or None when the trial is not checkpointed."""
        return None if self.checkpoints is None else self.checkpoints.next(phase)

    def emit(self, **event: Any) -> None:
        """Send one progress event (the keyword arguments as a dict) to ``progress``, if set."""
        if self.progress is not None:
            self.progress(event)

    def report_epoch(self, budget: int | None, phase: str, epoch: int,
                     val_accuracy: float) -> bool:
        """Report the validation accuracy of a network that meets its budget after a training
        epoch (fine-tune, from-scratch training, a mask-search epoch at the budget).

        ``budget``: the candidate's own budget when a run trains several (SNL harvest), else
        None (the budget the technique was run for). True: the search asks the trial to stop;
        the caller stops if training is left and then calls :meth:`cut_short`.
        """
        if self.early_stop is None:
            return False
        return self.early_stop.report(budget, phase, epoch, val_accuracy)

    def stop_asked(self) -> bool:
        """Whether the search asked this trial to stop (skip any training still to come)."""
        return self.early_stop is not None and self.early_stop.asked

    def cut_short(self) -> None:
        """Record that training was skipped or ended early because the search asked to stop
        (only then is the trial pruned)."""
        if self.early_stop is not None:
            self.early_stop.cut = True


class EarlyStop:
    """One trial's early-stopping channel between the search and its techniques.

    ``rule(budget, phase, epoch, val_accuracy) -> stop`` is the search's decision on each
    report; once it says stop, every later report says stop too (``asked``). ``cut``: some
    training was skipped because of it (set by the techniques through ``cut_short``).
    """

    def __init__(self, rule: Callable[[int | None, str, int, float], bool]) -> None:
        self.rule = rule
        self.asked = False
        self.cut = False

    def report(self, budget: int | None, phase: str, epoch: int, val_accuracy: float) -> bool:
        """Forward one report to the rule; True once the trial is asked to stop."""
        if not self.asked and self.rule(budget, phase, epoch, val_accuracy):
            self.asked = True
        return self.asked


@dataclass
class Candidate:
    """A reduced, trained model plus how it was obtained.

    model: prepared model (MixedActivation sites, materialized), eval mode.
    spec: its architecture (may differ from the base: width, resolution, HybReNet).
    history: recipe steps ``{"technique": name, "params": {...}, ...}``.
    """

    model: nn.Module
    spec: ModelSpec
    history: list[dict[str, Any]] = field(default_factory=list)
    val_accuracy: float = float("nan")
    notes: dict[str, Any] = field(default_factory=dict)

    def relus(self) -> int:
        """Per-sample ReLU count (elements still computed as exact ReLU) at ``spec.input_shape``."""
        return profile_model(self.model, self.spec.input_shape).relus

    def profile(self) -> ModelProfile:
        """Full per-sample profile (ReLUs, MACs, per-site kinds) at ``spec.input_shape``."""
        return profile_model(self.model, self.spec.input_shape)

    def clone(self) -> Candidate:
        """Deep copy of the model, spec, history and notes (``val_accuracy`` carried over)."""
        return Candidate(model=copy.deepcopy(self.model), spec=self.spec.model_copy(deep=True),
                         history=copy.deepcopy(self.history), val_accuracy=self.val_accuracy,
                         notes=dict(self.notes))


C = TypeVar("C", bound=TechniqueConfig)


@dataclass(frozen=True)
class PlannedPhase:
    """One training (or evaluation) phase a technique will run, for ``pi_opt.plan``.

    epochs: passes over the training split (``kind="train"``) or the validation
        split (``kind="eval"``); ``bound=True`` when this is an upper bound (the
        phase may stop earlier, e.g. SNL's descent stops once every budget is met).
    kd: a frozen teacher forward runs next to every training step.
    shared: computed once per job and cached (e.g. stage criticality), not per trial.
    reports: a training phase whose epochs report validation accuracy at the trial's budget
        to the search's pruning (``TechniqueContext.report_epoch``); False when its network
        holds more ReLUs than the budget (DeepReShape's HybReNet before culling).
    """

    name: str
    epochs: int
    kind: str = "train"
    kd: bool = True
    shared: bool = False
    bound: bool = False
    reports: bool = True


@dataclass(frozen=True)
class PlanInputs:
    """What a technique needs to size its phases without data: the fine-tune settings,
    how many budgets one trial answers (1 + harvested ones) and the backbone's stages."""

    finetune: TrainConfig
    budgets_per_trial: int = 1
    stages: int = 1


class Technique(ABC):
    """A ReLU-reduction method.

    Class attributes:
        name: registry key.
        Config: its pydantic config class.
        reduces_count: False for methods that only make ReLUs cheaper (Circa).
        harvests: True when one run passes through several budgets (an SNL descent):
            :meth:`with_harvest` then returns a copy whose ``run(budget=b)`` also returns
            candidates for the other budgets it is given, so the search runs one trial
            for every budget instead of one per budget.
    """

    name: ClassVar[str]
    Config: ClassVar[type[TechniqueConfig]]
    reduces_count: ClassVar[bool] = True
    harvests: ClassVar[bool] = False

    def __init__(self, config: TechniqueConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            try:
                config = self.Config(**kwargs)
            except ValidationError as exc:
                raise ConfigError(f"invalid {self.name} config: {exc}") from exc
        elif kwargs:
            raise TypeError("pass either a config object or keyword arguments")
        self.config = config

    @classmethod
    def suggest(cls, trial: Any, prefix: str) -> dict[str, Any]:
        """Sample config overrides from an Optuna trial (default: none)."""
        return {}

    def with_harvest(self, budgets: Sequence[int]) -> Technique:
        """A copy that also yields candidates at ``budgets`` (only when ``harvests``).

        Raises NotImplementedError for techniques that do not harvest.
        """
        raise NotImplementedError(f"{self.name} does not harvest several budgets in one run")

    @abstractmethod
    def run(self, ctx: TechniqueContext, start: Candidate, *, budget: int) -> list[Candidate]:
        """Return >= 1 candidates with at most ``budget`` ReLUs; the first answers ``budget``.

        Further candidates (e.g. SNL snapshots at other budgets) are harvested by the search.
        """

    def plan_phases(self, inputs: PlanInputs) -> list[PlannedPhase]:
        """Training phases one trial of this technique runs (for ``pi_opt.plan``).

        Default: one KD fine-tune of ``inputs.finetune.epochs`` epochs.
        """
        return [PlannedPhase("finetune", inputs.finetune.epochs)]

    def step_record(self, **extra: Any) -> dict[str, Any]:
        """One recipe history entry: ``{"technique", "params" (the config as JSON), **extra}``."""
        return {"technique": self.name, "params": self.config.model_dump(mode="json"), **extra}


TECHNIQUES: Registry[type[Technique]] = Registry("technique")


def register_technique(cls: type[Technique]) -> type[Technique]:
    """Class decorator: add ``cls`` to :data:`TECHNIQUES` under ``cls.name``.

    Raises ValueError when another class is already registered under that name.
    """
    TECHNIQUES.register(cls.name)(cls)
    return cls


def list_techniques() -> list[str]:
    """Registered technique names, sorted."""
    return TECHNIQUES.names()


def create_technique(name: str, **config: Any) -> Technique:
    """Instantiate the technique ``name`` (case-insensitive) with keyword ``config``.

    Raises UnknownNameError for an unknown name, ConfigError for an invalid config.
    """
    return TECHNIQUES.get(name)(**config)


def baseline_candidate(ctx: TechniqueContext) -> Candidate:
    """A deep copy of the teacher (and of the job's spec), empty history, NaN val accuracy:
    the starting point of a chain."""
    return Candidate(model=copy.deepcopy(ctx.teacher), spec=ctx.spec.model_copy(deep=True),
                     history=[], val_accuracy=float("nan"))


def device_of(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
