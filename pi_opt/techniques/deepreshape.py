"""DeepReShape / HybReNets (Jha & Reagen, TMLR'24; section 5 of the brief).

1. Stage criticality of the base ResNet (:mod:`pi_opt.techniques.criticality`).
2. Stage multipliers by ReLU equalization (:func:`equalization_multipliers`): the
   smallest integer multipliers (minimal sum; ties: smaller product, then
   lexicographic) for which the per-stage ReLU counts are strictly ordered like the
   stage criticality (most critical stage holds the most ReLUs). For the 4-stage
   CIFAR ResNet-18 and the order S3 > S2 > S4 > S1 this is (5, 5, 3) - HRN-5x5x3x.
   ``multipliers`` in the config overrides the rule.
3. Base width ``C`` from ``base_widths``: the HybReNet (same blocks, input channels,
   classes, stem ReLU and input downsampling as the base) whose all-ReLU count is the
   smallest >= ``target_multiplier`` x budget, else the largest below. Counted on
   the meta device (no memory, no training).
4. Train it from scratch with KD from the teacher, cull to the budget DeepReDuce-style
   (least critical stages, then thinning; most ReLUs <= budget), and if even the
   most reduced structure is above the budget (or ``fill_budget``), select exactly
   ``budget`` ReLUs at channel granularity with ``_common.keep_top``, scoring a
   channel by its mean nonlinearity ``E[relu(-x)]`` on training inputs
   (a near-linear channel costs little accuracy when linearized). Fine-tune with KD.

The candidate's spec is the HybReNet spec. DeepReShape redesigns the backbone, so
it must start a chain (all-ReLU start without history).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from pi_opt.activations import Kind
from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.errors import BudgetError, ConfigError
from pi_opt.models.resnet import ResNet
from pi_opt.profile import ModelProfile, profile_model
from pi_opt.sites import iter_sites, site_dict
from pi_opt.techniques._common import keep_top
from pi_opt.techniques.base import (
    Candidate, PlanInputs, PlannedPhase, Technique, TechniqueConfig, TechniqueContext,
    register_technique,
)
from pi_opt.techniques.criticality import (
    CriticalityInit, StageCriticality, apply_keep, criticality_phase, kinds_snapshot,
    stage_criticality, train_kd_or_eval,
)
from pi_opt.techniques.deepreduce import (
    ThinMode, all_relu, build_prepared, choose_plan, enumerate_plans, thin_options,
)
from pi_opt.training import resolve_device

MAX_GRID = 2_000_000


# ---------------------------------------------------------------------------
# ReLU equalization
# ---------------------------------------------------------------------------
def equalization_multipliers(
    most_critical_first: Sequence[int],
    relus_per_channel: Sequence[int],
    *,
    max_multiplier: int = 16,
) -> tuple[int, ...]:
    """Smallest integer stage multipliers whose per-stage ReLU counts follow the order.

    Stage ``s`` (0-based) has width ``C * prod(m[:s])`` and
    ``relus_s = width_s * relus_per_channel[s]``; ``relus_per_channel[s]`` is the
    number of ReLUs of stage ``s`` per channel (sum of H*W over its sites), so block
    counts and resolutions are included. Returns ``m`` (len S-1, each in
    ``1..max_multiplier``) with ``relus[o_0] > relus[o_1] > ...`` for
    ``most_critical_first = (o_0, o_1, ...)``, minimizing ``sum(m)`` (ties: smaller
    product, then lexicographic). Exact integer arithmetic.
    """
    s = len(relus_per_channel)
    if sorted(most_critical_first) != list(range(s)):
        raise ConfigError(f"order {list(most_critical_first)} is not a permutation of {s} stages")
    if s == 1:
        return ()
    n = s - 1
    if max_multiplier ** n > MAX_GRID:
        raise ConfigError(f"{s} stages x max_multiplier {max_multiplier} is too large a search; "
                          "set 'multipliers' explicitly")
    axis = torch.arange(1, max_multiplier + 1, dtype=torch.int64)
    grid = torch.cartesian_prod(*([axis] * n)) if n > 1 else axis.view(-1, 1)
    widths = torch.cat([torch.ones(len(grid), 1, dtype=torch.int64),
                        torch.cumprod(grid, dim=1)], dim=1)
    relus = widths * torch.tensor(list(relus_per_channel), dtype=torch.int64)
    order = list(most_critical_first)
    ok = torch.ones(len(grid), dtype=torch.bool)
    for a, b in itertools.pairwise(order):
        ok &= relus[:, a] > relus[:, b]
    if not bool(ok.any()):
        raise ConfigError(f"no multipliers <= {max_multiplier} put the stage ReLU counts in "
                          f"criticality order {order}; raise max_multiplier or set multipliers")
    cand = grid[ok]
    key = cand.sum(1) * (max_multiplier ** n + 1) + cand.prod(1).clamp(max=max_multiplier ** n)
    best = cand[key == key.min()]
    return tuple(int(v) for v in sorted(best.tolist())[0])


# ---------------------------------------------------------------------------
# base ResNet -> HybReNet specs
# ---------------------------------------------------------------------------
def resnet_layout(spec: ModelSpec) -> dict[str, Any]:
    """Blocks / stem ReLU / input downsampling / stem stride of a ResNet spec."""
    with torch.device("meta"):
        model = spec.build()
    if not isinstance(model, ResNet):
        raise ConfigError(
            f"deepreshape needs a ResNet base (resnet, resnet_mini, resnet18, resnet34, "
            f"hybrenet); {spec.arch.name!r} builds {type(model).__name__}")
    pool = model.input_pool
    ks = pool.kernel_size if isinstance(pool, nn.AvgPool2d) else 1
    return {
        "stages": list(model.stage_names),
        "blocks": [len(getattr(model, n)) for n in model.stage_names],
        "stem_relu": isinstance(model.stem_relu, nn.ReLU),
        "input_downsample": int(ks if isinstance(ks, int) else ks[0]),
        "stem_stride": int(model.stem.stride[0]),
    }


def hybrenet_spec(base: ModelSpec, layout: dict[str, Any], base_width: int,
                  multipliers: Sequence[float]) -> ModelSpec:
    """The HybReNet spec of ``layout`` (blocks, stem ReLU, downsampling) at ``base_width``
    and per-stage width ``multipliers``, keeping ``base``'s input channels and classes.
    """
    kwargs: dict[str, Any] = {
        "in_channels": base.input_shape[0], "num_classes": base.num_classes,
        "base_width": int(base_width), "multipliers": [m for m in multipliers],
        "blocks": list(layout["blocks"]), "stem_relu": bool(layout["stem_relu"]),
        "input_downsample": int(layout["input_downsample"]),
    }
    return base.model_copy(deep=True, update={"arch": ArchSpec(name="hybrenet", kwargs=kwargs)})


def meta_relus(spec: ModelSpec) -> tuple[int, int]:
    """(all-ReLU count, MACs) of ``spec`` counted on the meta device (no allocation)."""
    with torch.device("meta"):
        model = spec.build()
    p = profile_model(model, spec.input_shape)
    return p.relus, p.macs


def relus_per_channel(profile: ModelProfile, stages: list[str]) -> list[int]:
    """Per stage: ReLUs per channel of width (sum of H*W over the stage's sites)."""
    out = {s: 0 for s in stages}
    for site in profile.sites:
        if site.stage in out:
            out[site.stage] += site.shape[1] * site.shape[2]
    return [out[s] for s in stages]


@torch.no_grad()
def channel_nonlinearity(model: nn.Module, sites: list[str], x: Tensor, *,
                         batch_size: int = 256) -> dict[str, Tensor]:
    """Mean ``relu(-x)`` per channel of each named site's input -> ``[C, 1, 1]``."""
    smap = site_dict(model)
    acc: dict[str, Tensor] = {}
    handles = []

    def make(name: str):  # noqa: ANN202
        def hook(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            v = args[0]
            v = v.view(*v.shape, 1, 1) if v.dim() == 2 else v
            part = torch.relu(-v.float()).mean(dim=(2, 3)).sum(0)
            acc[name] = acc.get(name, 0) + part
        return hook

    for n in sites:
        handles.append(smap[n].register_forward_hook(make(n)))
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        for i in range(0, len(x), batch_size):
            model(x[i: i + batch_size].to(dev))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return {n: (acc[n] / max(len(x), 1)).view(-1, 1, 1).cpu() for n in sites}


# ---------------------------------------------------------------------------
# the technique
# ---------------------------------------------------------------------------
class DeepReShapeConfig(TechniqueConfig):
    """DeepReShape settings (defaults sized for digits / resnet_mini on CPU).

    multipliers: stage multipliers (len = stages - 1); None = ReLU equalization.
    base_widths: base widths C swept; target_multiplier: aim for an all-ReLU HybReNet
        with >= target_multiplier x budget ReLUs, then cull to the budget.
    train_epochs: from-scratch KD epochs (None = ceil(ctx.finetune.epochs x
        scratch_epoch_multiplier)) at scratch_lr (None = fine-tune lr);
        finetune_epochs: after culling (None = ctx.finetune.epochs).
    fill_budget: select exactly ``budget`` ReLUs (channel top-B) from the smallest
        structure above the budget instead of the largest structure below it.

    Scale: structure only (widths are chosen against the budget's absolute count).
    ``preset="paper"``: the base-width sweep C in 16/32/64/128 (paper's HybReNet
    families), 200 from-scratch KD epochs per HybReNet and 200-epoch criticality
    trainings like DeepReDuce's; the 100-epoch fine-tune after culling is SNL's
    convention (no DeepReShape code is public: these are not from a released script).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {
        "base_widths": (16, 32, 64, 128), "train_epochs": 200, "finetune_epochs": 100,
        "criticality_epochs": 200}}

    criticality_epochs: int = Field(2, ge=0)
    criticality_init: CriticalityInit = "teacher"
    multipliers: tuple[float, ...] | None = None
    max_multiplier: int = Field(16, ge=2, le=64)
    base_widths: tuple[int, ...] = (4, 8, 16, 32, 64)
    target_multiplier: float = Field(2.0, ge=1.0)
    train_epochs: int | None = Field(None, ge=0)
    scratch_epoch_multiplier: float = Field(2.0, ge=0)
    scratch_lr: float | None = Field(None, gt=0)
    finetune_epochs: int | None = Field(None, ge=0)
    thin: ThinMode = "auto"
    fill_budget: bool = False
    score_samples: int = Field(1024, ge=1)
    kd_temperature: float = Field(4.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)

    @field_validator("base_widths")
    @classmethod
    def _widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(w < 1 for w in v):
            raise ValueError("base_widths must be non-empty positive integers")
        return tuple(sorted(set(v)))

    @field_validator("multipliers")
    @classmethod
    def _mults(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and any(m <= 0 for m in v):
            raise ValueError("multipliers must be positive")
        return v


def _width_sweep(base: ModelSpec, layout: dict[str, Any], mults: Sequence[float], *,
                 widths: Sequence[int], target: float
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The HybReNet base width to build: the smallest ReLU count >= ``target`` (else the
    largest), with the whole sweep (``base_width``, ``relus``, ``macs`` per option)."""
    sweep = []
    for c in widths:
        hspec = hybrenet_spec(base, layout, c, mults)
        relus, macs = meta_relus(hspec)
        sweep.append({"base_width": c, "relus": relus, "macs": macs})
    above = [r for r in sweep if r["relus"] >= target]
    pick = (min(above, key=lambda r: (r["relus"], r["base_width"])) if above
            else max(sweep, key=lambda r: (r["relus"], -r["base_width"])))
    return pick, sweep


@register_technique
class DeepReShape(Technique):
    """HybReNet by ReLU equalization + width sweep, trained with KD, culled to the budget."""

    name = "deepreshape"
    Config = DeepReShapeConfig
    reduces_count = True
    config: DeepReShapeConfig

    @classmethod
    def suggest(cls, trial: Any, prefix: str) -> dict[str, Any]:
        """Search space: target multiplier, budget filling and KD temperature."""
        return {
            "target_multiplier": trial.suggest_categorical(f"{prefix}target_multiplier",
                                                           [1.0, 1.5, 2.0, 4.0]),
            "fill_budget": trial.suggest_categorical(f"{prefix}fill_budget", [False, True]),
            "kd_temperature": trial.suggest_categorical(f"{prefix}kd_temperature",
                                                        [1.0, 2.0, 4.0]),
        }

    def plan_phases(self, inputs: PlanInputs) -> list[PlannedPhase]:
        """Criticality (cached per job), the HybReNet's from-scratch KD training (a wider
        network than the base: its steps cost more than the base model's) and the
        post-cull fine-tune."""
        cfg = self.config
        ft = inputs.finetune.epochs
        train = (math.ceil(ft * cfg.scratch_epoch_multiplier) if cfg.train_epochs is None
                 else cfg.train_epochs)
        return [criticality_phase(cfg.criticality_epochs, inputs.stages),
                PlannedPhase("hybrenet-train", train, reports=False),
                PlannedPhase("finetune", ft if cfg.finetune_epochs is None
                             else cfg.finetune_epochs)]

    def _multipliers(self, ctx: TechniqueContext, stages: list[str], crit: StageCriticality
                     ) -> tuple[tuple[float, ...], str]:
        """Per-stage width multipliers (one per stage after the first) and the rule that
        chose them (``config`` or ``relu-equalization``); raises ConfigError."""
        cfg = self.config
        if cfg.multipliers is not None:
            if len(cfg.multipliers) != len(stages) - 1:
                raise ConfigError(f"multipliers needs {len(stages) - 1} values for "
                                  f"{len(stages)} stages, got {list(cfg.multipliers)}")
            mults: tuple[float, ...] = tuple(cfg.multipliers)
            rule = "config"
        else:
            missing = [s for s in stages if s not in crit.order]
            if missing:
                raise ConfigError(f"criticality profile lacks stages {missing}")
            ranked = [s for s in crit.most_critical_first() if s in stages]
            per_channel = relus_per_channel(ctx.baseline_profile, stages)
            mults = equalization_multipliers([stages.index(s) for s in ranked], per_channel,
                                             max_multiplier=cfg.max_multiplier)
            rule = "relu-equalization"
        return mults, rule

    def run(self, ctx: TechniqueContext, start: Candidate, *, budget: int) -> list[Candidate]:
        """Redesign the backbone as a HybReNet of at most ``budget`` ReLUs per sample and
        KD-train it from scratch; one candidate.

        Raises BudgetError for a negative budget, ConfigError when not first in a chain.
        """
        cfg = self.config
        if budget < 0:
            raise BudgetError(f"budget must be >= 0, got {budget}")
        base = ctx.spec
        layout = resnet_layout(base)
        if start.history or not all_relu(start.model):
            raise ConfigError("deepreshape redesigns the backbone and must be the first "
                              "technique of a chain (its start must be the all-ReLU baseline)")
        stages: list[str] = layout["stages"]
        crit = stage_criticality(ctx, epochs=cfg.criticality_epochs, init=cfg.criticality_init,
                                 technique=self.name)

        mults, rule = self._multipliers(ctx, stages, crit)
        pick, sweep = _width_sweep(base, layout, mults, widths=cfg.base_widths,
                                   target=cfg.target_multiplier * budget)
        hspec = hybrenet_spec(base, layout, pick["base_width"], mults)
        ctx.emit(type="technique", technique=self.name, event="design", multipliers=list(mults),
                 rule=rule, base_width=pick["base_width"], relus=pick["relus"], budget=budget)

        # 3. train the HybReNet from scratch with KD
        dev = resolve_device(ctx.finetune.device)
        model = build_prepared(hspec, device=dev, seed=ctx.seed)
        cand = Candidate(model=model, spec=hspec, history=copy.deepcopy(start.history))
        train_epochs = (math.ceil(ctx.finetune.epochs * cfg.scratch_epoch_multiplier)
                        if cfg.train_epochs is None else cfg.train_epochs)
        kd = {"kd_temperature": cfg.kd_temperature, "kd_weight": cfg.kd_weight}
        # the HybReNet holds more ReLUs than the budget until culled: no early-stop reports
        train_kd_or_eval(dataclasses.replace(ctx, early_stop=None), cand, epochs=train_epochs,
                         phase=f"{self.name}-train", **kd,
                         **({"lr": cfg.scratch_lr} if cfg.scratch_lr is not None else {}))
        full_accuracy = cand.val_accuracy

        # 4. cull to the budget
        plans = enumerate_plans(cand.model, hspec, crit.order,
                                thin_options=thin_options(cfg.thin))
        plan = choose_plan(plans, budget)
        above_plans = [p for p in plans if p.relus > budget]
        top_b = plan is None or (cfg.fill_budget and plan.relus < budget and bool(above_plans))
        if top_b:
            plan = min(above_plans, key=lambda p: (p.relus, p.macs))
        assert plan is not None
        apply_keep(cand.model, kinds_snapshot(cand.model), plan.keep)
        if top_b:
            keep_sites = [n for n, _ in iter_sites(cand.model) if n in plan.keep]
            smap = site_dict(cand.model)
            for n in keep_sites:  # channel granularity, all ReLU
                s = smap[n]
                assert s.input_shape is not None
                s.materialize(s.input_shape, "channel")
            x = ctx.data.train.tensors[0]
            idx = torch.linspace(0, len(x) - 1, min(len(x), cfg.score_samples)).round().long()
            scores = channel_nonlinearity(cand.model, keep_sites, x[idx])
            keep_top(cand.model, scores, budget, drop_kind=Kind.IDENTITY, keep_kind=Kind.RELU)
        relus_before_ft = cand.relus()
        ft = ctx.finetune.epochs if cfg.finetune_epochs is None else cfg.finetune_epochs
        train_kd_or_eval(ctx, cand, epochs=ft, phase=f"{self.name}-finetune", **kd)
        relus = cand.relus()
        if relus > budget or relus != relus_before_ft:  # pragma: no cover - invariant
            raise BudgetError(f"DeepReShape produced {relus} ReLUs > budget {budget}")
        notes = []
        if layout["stem_stride"] != 1:
            notes.append(f"base stem_stride={layout['stem_stride']} is not a hybrenet option; "
                         "the HybReNet uses stride 1")
        cand.history.append(self.step_record(
            budget=budget, multipliers=list(mults), multiplier_rule=rule,
            base_width=pick["base_width"], hybrenet_relus=pick["relus"],
            hybrenet_macs=pick["macs"], width_sweep=sweep, train_epochs=train_epochs,
            hybrenet_val_accuracy=full_accuracy, culled=list(plan.culled), thin=plan.thin,
            channel_top_b=top_b, relus=relus, finetune_epochs=ft,
            criticality_order=crit.order, val_accuracy=cand.val_accuracy, notes=notes))
        cand.notes.update({"hybrenet": hspec.arch.model_dump(), "channel_top_b": top_b})
        ctx.emit(type="technique", technique=self.name, event="done", budget=budget,
                 relus=relus, val_accuracy=cand.val_accuracy)
        return [cand]


__all__ = [
    "DeepReShape", "DeepReShapeConfig", "channel_nonlinearity", "equalization_multipliers",
    "hybrenet_spec", "meta_relus", "relus_per_channel", "resnet_layout",
]
