"""DeepReDuce (Jha, Ghodsi, Garg, Reagen, ICML'21): coarse, stage-level ReLU surgery.

Candidates are the product of

* culling the ``i`` least critical stages (``i = 0 .. S-1``; order from
  :mod:`pi_opt.techniques.criticality`, the stem is its own stage),
* thinning on/off: ResNets drop the post-residual ``relu2`` of every block in the
  remaining stages, other models every other site within a stage,
* width factor ``alpha`` (arch kwarg ``width_mult``, multiplied into the start's) and
* resolution factor ``1 / input_downsample`` (arch kwarg ``input_downsample``).

Each candidate is counted exactly with :func:`pi_opt.profile.profile_model` on an
untrained instance (no training). The candidate with the most ReLUs <= budget wins
(ties: fewer MACs, then the unchanged architecture). If even the smallest exceeds
the budget, the fallback keeps whole sites, most critical stage first, greedily
while they fit (every other site IDENTITY); this never exceeds the budget and
may keep 0 ReLUs. Only the chosen candidate is trained: from the start's weights
when the architecture is unchanged (cull/thin only), else from scratch (seeded by
``ctx.seed``), in both cases with CE + ``kd_weight`` x KD(T) from ``ctx.teacher``.
Width/resolution changes are only offered when the architecture accepts the kwarg
and the start is all-ReLU (a rebuilt network would lose earlier masks).
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from pi_opt.activations import Kind
from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.errors import BudgetError, PiOptError
from pi_opt.models import MODELS
from pi_opt.profile import profile_model
from pi_opt.sites import iter_sites, materialize_all, prepare_sites, stage_of
from pi_opt.techniques.base import (
    Candidate, PlanInputs, PlannedPhase, Technique, TechniqueConfig, TechniqueContext,
    register_technique,
)
from pi_opt.techniques.criticality import (
    CriticalityInit, apply_keep, criticality_phase, ensure_materialized, kinds_snapshot,
    stage_criticality,
    stage_sites, thinned_sites, train_kd_or_eval,
)

ThinMode = Literal["auto", "always", "never"]
_KEPT = (int(Kind.RELU), int(Kind.CIRCA))


@dataclass(frozen=True)
class Plan:
    """One DeepReDuce candidate (counted, not trained).

    alpha / input_downsample are relative to the start's spec; ``spec`` is the
    resulting architecture; ``keep`` the sites that keep their kinds (others IDENTITY).
    """

    culled: tuple[str, ...]
    thin: bool
    alpha: float
    input_downsample: int
    spec: ModelSpec = field(compare=False)
    keep: frozenset[str] = field(compare=False)
    relus: int = 0
    macs: int = 0
    fallback: bool = False

    @property
    def arch_changed(self) -> bool:
        """True when width or input resolution differ from the start (the model is retrained)."""
        return self.alpha != 1.0 or self.input_downsample != 1

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the plan (culled stages, thinning, alpha, downsampling, counts)."""
        return {"culled": list(self.culled), "thin": self.thin, "alpha": self.alpha,
                "input_downsample": self.input_downsample, "relus": self.relus,
                "macs": self.macs, "fallback": self.fallback,
                "arch_changed": self.arch_changed}


def _kept_count(kinds: Tensor, site_numel: int) -> int:
    per = site_numel // max(kinds.numel(), 1)
    kept = (kinds == _KEPT[0]) | (kinds == _KEPT[1])
    return int(kept.sum()) * per


def all_relu(model: nn.Module) -> bool:
    """True when every site position is an exact ReLU (unmaterialized sites count as such)."""
    return all(not s.materialized or bool((s.kinds == int(Kind.RELU)).all())
               for _, s in iter_sites(model))


def arch_variants(
    spec: ModelSpec, alphas: tuple[float, ...], downsamples: tuple[int, ...]
) -> list[tuple[float, int, ModelSpec]]:
    """``(alpha, downsample, spec)`` for every option the architecture accepts
    (``width_mult`` / ``input_downsample`` must be explicit factory parameters)."""
    params = inspect.signature(MODELS.get(spec.arch.name)).parameters

    def default(name: str, fallback: Any) -> Any:
        d = params[name].default
        return fallback if d is inspect.Parameter.empty else d

    out: list[tuple[float, int, ModelSpec]] = []
    seen: set[tuple[float, int]] = set()
    for alpha in alphas:
        for ds in downsamples:
            a, r = float(alpha), int(ds)
            if (a, r) in seen:
                continue
            seen.add((a, r))
            kw = dict(spec.arch.kwargs)
            if a != 1.0:
                if "width_mult" not in params:
                    continue
                kw["width_mult"] = float(kw.get("width_mult", default("width_mult", 1.0))) * a
            if r != 1:
                if "input_downsample" not in params:
                    continue
                kw["input_downsample"] = int(kw.get("input_downsample",
                                                    default("input_downsample", 1))) * r
            new = spec.model_copy(deep=True, update={"arch": ArchSpec(name=spec.arch.name,
                                                                     kwargs=kw)})
            out.append((a, r, new))
    return out


def build_prepared(spec: ModelSpec, *, device: torch.device | str = "cpu",
                   seed: int | None = None) -> nn.Module:
    """Fresh prepared, materialized (all-ReLU, element granularity) instance of ``spec``."""
    if seed is not None:
        torch.manual_seed(seed)
    model = prepare_sites(spec.build()).to(device)
    materialize_all(model, torch.zeros(1, *spec.input_shape, device=device))
    return model


def stage_order(criticality_order: list[str], stages: list[str]) -> list[str]:
    """Least critical first, restricted to ``stages``; unknown stages count as most critical."""
    known = [s for s in criticality_order if s in stages]
    return known + [s for s in stages if s not in known]


def _count(model: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    p = profile_model(model, spec.input_shape)
    return p.relus, p.macs


def enumerate_plans(
    start_model: nn.Module,
    start_spec: ModelSpec,
    order: list[str],
    *,
    thin_options: tuple[bool, ...] = (False, True),
    alphas: tuple[float, ...] = (1.0,),
    downsamples: tuple[int, ...] = (1,),
    budget: int | None = None,
) -> list[Plan]:
    """Count every candidate; with ``budget`` also add one greedy whole-site fallback
    plan per architecture (see module doc). ``order``: least critical stage first."""
    allow_arch = all_relu(start_model)
    plans: list[Plan] = []
    for alpha, ds, vspec in arch_variants(start_spec, alphas, downsamples):
        if alpha == 1.0 and ds == 1:
            inst = copy.deepcopy(start_model).cpu()
            ensure_materialized(inst, start_spec.input_shape)
        elif not allow_arch:
            continue
        else:
            try:
                inst = build_prepared(vspec)
            except (PiOptError, RuntimeError, ValueError):
                continue  # e.g. the resolution is too small for this downsampling
        base = kinds_snapshot(inst)
        groups = stage_sites(inst)
        sites = [n for names in groups.values() for n in names]
        st_order = stage_order(order, list(groups))
        thin_set = thinned_sites(inst)
        seen: set[frozenset[str]] = set()
        for i in range(len(st_order)):
            culled = tuple(st_order[:i])
            for thin in thin_options:
                keep = frozenset(n for n in sites if stage_of(n) not in culled
                                 and not (thin and n in thin_set))
                if keep in seen:
                    continue
                seen.add(keep)
                apply_keep(inst, base, keep)
                relus, macs = _count(inst, vspec)
                plans.append(Plan(culled, thin, alpha, ds, vspec, keep, relus, macs))
        if budget is not None:
            elements = {n: int(s.full_kinds().numel()) for n, s in iter_sites(inst)}
            keep_l: list[str] = []
            total = 0
            for st in reversed(st_order):  # most critical stage first
                for n in groups[st]:
                    c = _kept_count(base[n], elements[n])
                    if total + c <= budget:
                        keep_l.append(n)
                        total += c
            keep = frozenset(keep_l)
            apply_keep(inst, base, keep)
            relus, macs = _count(inst, vspec)
            culled = tuple(s for s in st_order if not any(stage_of(n) == s for n in keep))
            plans.append(Plan(culled, False, alpha, ds, vspec, keep, relus, macs, fallback=True))
        del inst
    return plans


def choose_plan(plans: list[Plan], budget: int) -> Plan | None:
    """Most ReLUs <= budget among the regular plans (ties: fewer MACs, unchanged arch, order);
    the best fallback plan only when no regular plan fits."""
    for pool in ([p for p in plans if not p.fallback], [p for p in plans if p.fallback]):
        ok = [(i, p) for i, p in enumerate(pool) if p.relus <= budget]
        if ok:
            return min(ok, key=lambda t: (-t[1].relus, t[1].macs, t[1].arch_changed, t[0]))[1]
    return None


def realize_plan(plan: Plan, start: Candidate, ctx: TechniqueContext) -> nn.Module:
    """The model of ``plan``: a copy of the start (same arch) or a fresh seeded instance."""
    if plan.arch_changed:
        model = build_prepared(plan.spec, seed=ctx.seed)
    else:
        model = copy.deepcopy(start.model)
        ensure_materialized(model, start.spec.input_shape)
    apply_keep(model, kinds_snapshot(model), plan.keep)
    return model


class DeepReDuceConfig(TechniqueConfig):
    """DeepReDuce settings (defaults sized for digits / resnet_mini on CPU).

    criticality_epochs: KD epochs per stage variant of the criticality profile (cached).
    thin: "auto" enumerates thinning on and off; "always"/"never" fixes it.
    alphas: width factors tried (need arch kwarg ``width_mult``).
    input_downsamples: input average-pooling factors tried (arch kwarg ``input_downsample``).
    epochs: KD epochs of the chosen candidate (None = ``ctx.finetune.epochs``); a
        from-scratch candidate (alpha/resolution changed) trains
        ``ceil(epochs * scratch_epoch_multiplier)`` epochs at ``scratch_lr``
        (None = the fine-tune lr).
    kd_temperature / kd_weight: loss = CE + kd_weight * T^2 KL (brief 1.3/4.4).

    Scale: nothing here depends on the ReLU count (whole stages are culled; epochs
    are epochs). ``preset="paper"``: every candidate trains 200 KD epochs, from
    scratch or not (DI-repo re-implementation: 200 epochs, cosine, SGD lr 1e-3 - the
    lr is the job's ``finetune.lr``; its loss 0.5 CE + 0.5 KD equals ours at half
    the lr), and each stage variant of the criticality profile is a full 200-epoch
    training (paper's procedure, recalled - no official code is public).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {
        "epochs": 200, "scratch_epoch_multiplier": 1.0, "criticality_epochs": 200}}
    criticality_epochs: int = Field(2, ge=0)
    criticality_init: CriticalityInit = "teacher"
    thin: ThinMode = "auto"
    alphas: tuple[float, ...] = (1.0, 0.5)
    input_downsamples: tuple[int, ...] = (1, 2)
    epochs: int | None = Field(None, ge=0)
    scratch_epoch_multiplier: float = Field(2.0, ge=0)
    scratch_lr: float | None = Field(None, gt=0)
    kd_temperature: float = Field(4.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not (0 < a <= 4) for a in v):
            raise ValueError("alphas must be non-empty, each in (0, 4]")
        return v

    @field_validator("input_downsamples")
    @classmethod
    def _ds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(d < 1 for d in v):
            raise ValueError("input_downsamples must be non-empty, each >= 1")
        return v


_ALPHA_SETS = {"1": (1.0,), "1,0.5": (1.0, 0.5), "1,0.5,0.25": (1.0, 0.5, 0.25)}


def thin_options(mode: ThinMode) -> tuple[bool, ...]:
    """Thinning settings to try for ``mode``: both, only on, or only off."""
    return {"auto": (False, True), "always": (True,), "never": (False,)}[mode]


@register_technique
class DeepReDuce(Technique):
    """Stage culling / thinning / width / resolution, chosen analytically, trained with KD."""

    name = "deepreduce"
    Config = DeepReDuceConfig
    reduces_count = True
    config: DeepReDuceConfig

    @classmethod
    def suggest(cls, trial: Any, prefix: str) -> dict[str, Any]:
        """Search space: thinning mode, channel-scale set ``alphas`` and KD temperature."""
        return {
            "thin": trial.suggest_categorical(f"{prefix}thin", ["auto", "always", "never"]),
            "alphas": _ALPHA_SETS[trial.suggest_categorical(f"{prefix}alphas",
                                                            list(_ALPHA_SETS))],
            "kd_temperature": trial.suggest_categorical(f"{prefix}kd_temperature",
                                                        [1.0, 2.0, 4.0]),
        }

    def plan_phases(self, inputs: PlanInputs) -> list[PlannedPhase]:
        """Criticality (cached per job) and one KD training; a candidate whose width or
        resolution changed trains ``scratch_epoch_multiplier`` x longer (counted as a bound)."""
        cfg = self.config
        epochs = inputs.finetune.epochs if cfg.epochs is None else cfg.epochs
        scratch = math.ceil(epochs * cfg.scratch_epoch_multiplier)
        return [criticality_phase(cfg.criticality_epochs, inputs.stages),
                PlannedPhase("train", max(epochs, scratch), bound=scratch > epochs)]

    def run(self, ctx: TechniqueContext, start: Candidate, *, budget: int) -> list[Candidate]:
        """Cull least-critical stages (thin, scale channels, downsample input as needed) to at
        most ``budget`` ReLUs per sample and KD-train; one candidate.

        Raises BudgetError for a negative budget.
        """
        cfg = self.config
        if budget < 0:
            raise BudgetError(f"budget must be >= 0, got {budget}")
        epochs = ctx.finetune.epochs if cfg.epochs is None else cfg.epochs
        start_relus = start.relus()
        if start_relus <= budget:  # the uncut start is the candidate with the most ReLUs
            cand = start.clone()
            train_kd_or_eval(ctx, cand, epochs=0, phase=f"{self.name}-eval")
            cand.history.append(self.step_record(budget=budget, relus=start_relus, skipped=True))
            cand.notes["budget_already_met"] = True
            return [cand]

        crit = stage_criticality(ctx, epochs=cfg.criticality_epochs, init=cfg.criticality_init,
                                 technique=self.name)
        plans = enumerate_plans(start.model, start.spec, crit.order,
                                thin_options=thin_options(cfg.thin), alphas=cfg.alphas,
                                downsamples=cfg.input_downsamples, budget=budget)
        plan = choose_plan(plans, budget)
        if plan is None:  # pragma: no cover - the fallback of the start arch always fits
            raise BudgetError(f"no DeepReDuce candidate fits budget {budget}")
        ctx.emit(type="technique", technique=self.name, event="plan", budget=budget,
                 candidates=len(plans), chosen=plan.describe())

        model = realize_plan(plan, start, ctx)
        cand = Candidate(model=model, spec=plan.spec.model_copy(deep=True),
                         history=copy.deepcopy(start.history))
        overrides: dict[str, Any] = {"kd_temperature": cfg.kd_temperature,
                                     "kd_weight": cfg.kd_weight}
        if plan.arch_changed:
            epochs = math.ceil(epochs * cfg.scratch_epoch_multiplier)
            if cfg.scratch_lr is not None:
                overrides["lr"] = cfg.scratch_lr
        train_kd_or_eval(ctx, cand, epochs=epochs, phase=f"{self.name}-train", **overrides)
        relus = cand.relus()
        if relus != plan.relus or relus > budget:  # pragma: no cover - counting invariant
            raise BudgetError(f"DeepReDuce built {relus} ReLUs, planned {plan.relus}, "
                              f"budget {budget}")
        cand.history.append(self.step_record(
            budget=budget, **plan.describe(), epochs=epochs,
            criticality_order=crit.order, criticality_scores=crit.scores,
            val_accuracy=cand.val_accuracy))
        cand.notes.update({"plan": plan.describe(), "criticality": crit.order,
                           "candidates_counted": len(plans)})
        if plan.fallback:
            cand.notes["warning"] = (
                f"no cull/thin/width/resolution candidate fits budget {budget}; kept whole "
                f"sites of the most critical stages greedily ({relus} ReLUs)")
        ctx.emit(type="technique", technique=self.name, event="done", budget=budget,
                 relus=relus, val_accuracy=cand.val_accuracy)
        return [cand]


__all__ = [
    "DeepReDuce", "DeepReDuceConfig", "Plan", "all_relu", "arch_variants", "build_prepared",
    "choose_plan", "enumerate_plans", "realize_plan", "stage_order", "thin_options",
]
