"""Circa (Ghodsi, Jha, Reagen, Garg, NeurIPS'21; section 6 of the brief) as a post-pass.

Every kept position (RELU, or CIRCA already) of the start candidate becomes a
``Kind.CIRCA`` stochastic ReLU whose sign test drops the ``k`` low bits of each
share and keeps ``l`` bits (:mod:`pi_opt.circa` is the fault model). The ReLU
count does not change (Circa ReLUs count as ReLUs); each ReLU becomes cheaper.

Selection (validation split, ``repeats`` seeded repetitions per evaluation - the
simulation is stochastic; the same seeds are reused for every k, so the k's are
compared on common random numbers):

* ``l`` per site: the smallest value in ``l_choices`` (with ``k + l <= 64``) such
  that ``range_margin * max|x| < exact_range(k, l)``, ``max|x|`` measured over the
  site's kept positions on the validation inputs; else ``64 - k`` (full width).
* ``k`` per model: scan ``k_choices`` upward and keep the largest ``k`` before the
  first whose mean accuracy drop vs the start exceeds ``tolerance`` (a prefix rule:
  a lucky large ``k`` after a failing smaller one is not taken). If even the
  smallest fails, the smallest is used and the record says so.
* ``per_site=True``: then, site by site, try larger ``k`` (largest first) and keep
  the first whose whole-model drop stays within the tolerance.

Optional noise-aware KD fine-tune (``finetune_epochs``) with the stochastic op in
the loop (straight-through gradient); the ranges and ``l`` are re-measured after it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from pi_opt.activations import Kind, MixedActivation
from pi_opt.circa import exact_range
from pi_opt.errors import BudgetError
from pi_opt.sites import iter_sites
from pi_opt.techniques.base import (
    Candidate, PlanInputs, PlannedPhase, Technique, TechniqueConfig, TechniqueContext,
    register_technique,
)
from pi_opt.techniques.criticality import ensure_materialized, train_kd_or_eval
from pi_opt.training import evaluate, resolve_device


class CircaConfig(TechniqueConfig):
    """Circa settings.

    k_choices: truncated low bits tried (fault band: 0 <= x < 2^(k-16) may be zeroed).
    l_choices: kept bits allowed; tolerance: max mean val-accuracy drop (fraction, 0.01
    = 1 point); repeats: seeded repetitions per evaluation; range_margin: headroom on the
    measured max |x| when choosing l; finetune_epochs: noise-aware KD fine-tune.

    Scale: the k sweep is per model (or per site) and reads accuracy, not counts.
    ``preset="paper"`` equals the defaults: the paper changes the protocol on a
    trained network without retraining (finetune_epochs 0).
    """

    k_choices: tuple[int, ...] = (0, 4, 8, 10, 12, 14, 16)
    l_choices: tuple[int, ...] = (8, 16, 32)
    tolerance: float = Field(0.01, ge=0.0, le=1.0)
    per_site: bool = False
    repeats: int = Field(3, ge=1)
    range_margin: float = Field(2.0, ge=1.0)
    finetune_epochs: int = Field(0, ge=0)
    kd_temperature: float = Field(4.0, gt=0)
    batch_size: int = Field(512, ge=1)

    @field_validator("k_choices")
    @classmethod
    def _k(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not (0 <= k <= 60) for k in v):
            raise ValueError("k_choices must be non-empty, each in 0..60")
        return tuple(sorted(set(v)))

    @field_validator("l_choices")
    @classmethod
    def _l(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not (2 <= l <= 64) for l in v):
            raise ValueError("l_choices must be non-empty, each in 2..64")
        return tuple(sorted(set(v)))

    @model_validator(mode="after")
    def _fits(self) -> CircaConfig:
        if min(self.k_choices) + min(self.l_choices) > 64:
            raise ValueError("need k + l <= 64 for some choice")
        return self


def choose_l(max_abs: float, k: int, l_choices: tuple[int, ...], *, margin: float = 1.0) -> int:
    """Smallest allowed ``l`` with ``margin * max_abs < exact_range(k, l)``; else ``64 - k``."""
    need = margin * max_abs
    for l in sorted(l_choices):
        if k + l <= 64 and need < exact_range(k, l):
            return l
    return 64 - k


def _kept_mask(site: MixedActivation) -> Tensor:
    return (site.kinds == int(Kind.RELU)) | (site.kinds == int(Kind.CIRCA))


@torch.no_grad()
def measure_max_abs(model: nn.Module, sites: dict[str, MixedActivation], data: TensorDataset,
                    *, batch_size: int = 512) -> dict[str, float]:
    """max |x| over the validation inputs, per site, restricted to its kept positions."""
    dev = next(model.parameters()).device
    out = {n: torch.zeros((), device=dev) for n in sites}
    masks = {n: _kept_mask(s).to(dev) for n, s in sites.items()}
    handles = []

    def make(name: str):  # noqa: ANN202
        def hook(mod: nn.Module, args: tuple[Tensor, ...], res: Tensor) -> None:
            x = args[0].detach()
            m = masks[name] if x.dim() == 4 else masks[name].reshape(-1)
            v = torch.where(m, x.abs(), torch.zeros((), device=x.device, dtype=x.dtype))
            out[name] = torch.maximum(out[name], v.amax().float())
        return hook

    for n, s in sites.items():
        handles.append(s.register_forward_hook(make(n)))
    was = model.training
    model.eval()
    x_all = data.tensors[0]
    try:
        for i in range(0, len(x_all), batch_size):
            model(x_all[i: i + batch_size].to(dev))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return {n: float(v) for n, v in out.items()}


def _set_generators(sites: dict[str, MixedActivation], seed: int | None,
                    device: torch.device) -> None:
    for i, s in enumerate(sites.values()):
        if seed is None:
            s.circa_generator = None
        else:
            g = torch.Generator(device=device)
            g.manual_seed((seed * 1_000_003 + i * 7_919) % (2**63))
            s.circa_generator = g


def fault_accuracy(model: nn.Module, sites: dict[str, MixedActivation], data: TensorDataset, *,
                   repeats: int, seed: int, device: str, num_classes: int | None = None,
                   batch_size: int = 512) -> tuple[float, float, list[float]]:
    """Mean / std / per-repetition accuracy with seeded Circa generators (restored to None)."""
    dev = next(model.parameters()).device
    accs: list[float] = []
    try:
        for r in range(repeats):
            _set_generators(sites, seed + r, dev)
            accs.append(evaluate(model, data, batch_size=batch_size, device=device,
                                 num_classes=num_classes).accuracy)
    finally:
        _set_generators(sites, None, dev)
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1))
    return mean, std, accs


@register_technique
class Circa(Technique):
    """Stochastic truncated-sign ReLUs on every kept position; k by validation tolerance."""

    name = "circa"
    Config = CircaConfig
    reduces_count = False
    config: CircaConfig

    @classmethod
    def suggest(cls, trial: Any, prefix: str) -> dict[str, Any]:
        return {
            "tolerance": trial.suggest_categorical(f"{prefix}tolerance",
                                                   [0.0, 0.005, 0.01, 0.02]),
            "per_site": trial.suggest_categorical(f"{prefix}per_site", [False, True]),
        }

    def plan_phases(self, inputs: PlanInputs) -> list[PlannedPhase]:
        """The k sweep (``repeats`` validation passes per k, at most) and the optional
        noise-aware fine-tune; the per-site refinement is not counted."""
        cfg = self.config
        out = [PlannedPhase("k-sweep", (len(cfg.k_choices) + 1) * cfg.repeats, kind="eval",
                            kd=False, bound=True)]
        if cfg.finetune_epochs:
            out.append(PlannedPhase("finetune", cfg.finetune_epochs))
        return out

    def run(self, ctx: TechniqueContext, start: Candidate, *, budget: int) -> list[Candidate]:
        cfg = self.config
        count = start.relus()
        if count > budget:
            raise BudgetError(f"circa does not reduce the ReLU count: the start has {count} "
                              f"ReLUs > budget {budget}; put a count-reducing technique first")
        dev = resolve_device(ctx.finetune.device)
        cand = start.clone()
        model = cand.model.to(dev).eval()
        ensure_materialized(model, cand.spec.input_shape)
        sites = {n: s for n, s in iter_sites(model) if bool(_kept_mask(s).any())}
        val = ctx.data.val
        base_seed = ctx.seed * 7_777 + 1

        def accuracy(repeats: int) -> tuple[float, float, list[float]]:
            return fault_accuracy(model, sites, val, repeats=repeats, seed=base_seed,
                                  device=ctx.finetune.device, num_classes=ctx.data.num_classes,
                                  batch_size=cfg.batch_size)

        stochastic = any(bool((s.kinds == int(Kind.CIRCA)).any()) for s in sites.values())
        acc0, _, _ = accuracy(cfg.repeats if stochastic else 1)
        if not sites:
            cand.val_accuracy = acc0
            cand.history.append(self.step_record(budget=budget, relus=count, skipped=True,
                                                 reason="no kept ReLU positions"))
            return [cand]
        max_abs = measure_max_abs(model, sites, val, batch_size=cfg.batch_size)
        for s in sites.values():  # every kept position becomes a Circa ReLU
            s.set_kinds(torch.where(_kept_mask(s), torch.tensor(int(Kind.CIRCA), dtype=torch.int8,
                                                               device=s.kinds.device), s.kinds))

        def configure(ks: dict[str, int]) -> dict[str, int]:
            ls = {n: choose_l(max_abs[n], ks[n], cfg.l_choices, margin=cfg.range_margin)
                  for n in sites}
            for n, s in sites.items():
                s.set_circa(ks[n], ls[n])
            return ls

        def measure(ks: dict[str, int]) -> tuple[float, float]:
            configure(ks)
            mean, std, _ = accuracy(cfg.repeats)
            return mean, std

        # per-model k: prefix rule over ascending k
        sweep: list[dict[str, Any]] = []
        chosen: int | None = None
        for k in cfg.k_choices:
            mean, std = measure({n: k for n in sites})
            drop = acc0 - mean
            sweep.append({"k": k, "accuracy": mean, "std": std, "drop": drop})
            ctx.emit(type="technique", technique=self.name, event="k-sweep", k=k,
                     accuracy=mean, drop=drop)
            if drop > cfg.tolerance + 1e-12:
                break
            chosen = k
        within = chosen is not None
        k_model = chosen if chosen is not None else cfg.k_choices[0]
        ks = {n: k_model for n in sites}

        # optional per-site refinement
        site_trials = 0
        if cfg.per_site and within:
            for n in sites:
                for k in sorted((k for k in cfg.k_choices if k > k_model), reverse=True):
                    trial = dict(ks, **{n: k})
                    mean, _ = measure(trial)
                    site_trials += 1
                    if acc0 - mean <= cfg.tolerance + 1e-12:
                        ks = trial
                        break
                ctx.emit(type="technique", technique=self.name, event="site-k", site=n, k=ks[n])
        ls = configure(ks)

        # optional noise-aware fine-tune
        if cfg.finetune_epochs > 0:
            _set_generators(sites, base_seed + 10_000, dev)
            try:
                train_kd_or_eval(ctx, cand, epochs=cfg.finetune_epochs,
                                 phase=f"{self.name}-finetune",
                                 kd_temperature=cfg.kd_temperature)
            finally:
                _set_generators(sites, None, dev)
            # ranges may have grown: re-measure (exact ReLUs for the measurement)
            for s in sites.values():
                s.set_circa(0, 64)
            max_abs = measure_max_abs(model, sites, val, batch_size=cfg.batch_size)
            ls = configure(ks)
        mean, std, accs = accuracy(cfg.repeats)
        cand.val_accuracy = mean
        cand.model.eval()
        relus = cand.relus()
        if relus != count:  # pragma: no cover - Circa never changes the count
            raise BudgetError(f"circa changed the ReLU count {count} -> {relus}")
        per_site_k = cfg.per_site and len(set(ks.values())) > 1
        cand.history.append(self.step_record(
            budget=budget, relus=relus,
            k=(dict(ks) if per_site_k else k_model), l=dict(ls),
            max_abs={n: max_abs[n] for n in sites},
            start_val_accuracy=acc0, fault_val_accuracy=mean, fault_val_std=std,
            fault_val_accuracies=accs, within_tolerance=within, sweep=sweep,
            site_trials=site_trials))
        cand.notes.update({"circa_k": ks, "circa_l": ls, "within_tolerance": within})
        if not within:
            cand.notes["warning"] = (f"even k={k_model} drops val accuracy by "
                                     f"{sweep[0]['drop']:.4f} > tolerance {cfg.tolerance}")
        ctx.emit(type="technique", technique=self.name, event="done", k=k_model,
                 val_accuracy=mean, drop=acc0 - mean)
        return [cand]


__all__ = ["Circa", "CircaConfig", "choose_l", "fault_accuracy", "measure_max_abs"]
