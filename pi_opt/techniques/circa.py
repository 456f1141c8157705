"""Circa (Ghodsi, Jha, Reagen, Garg, NeurIPS'21; section 6 of the brief) as a post-pass.

Every kept position (RELU, or CIRCA already) of the start candidate becomes a
``Kind.CIRCA`` stochastic ReLU whose sign test drops the ``k`` low bits of each
share and keeps ``l`` bits (:mod:`pi_opt.circa_faults` is the fault model). The ReLU
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
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from pi_opt.activations import Kind, MixedActivation
from pi_opt.circa_faults import exact_range
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
        """Search space: accuracy-drop ``tolerance`` (fraction) and the per-site refinement flag."""
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
        """Make every kept ReLU of ``start`` a Circa ReLU; choose ``k`` and ``l``.

        Phases: prepare (start accuracy, max |x| per site) -> convert kept positions ->
        sweep the model-wide ``k`` -> optional per-site refinement -> optional
        noise-aware fine-tune -> final measurement and record.

        Raises:
            BudgetError: ``start`` already holds more than ``budget`` ReLUs (Circa does not
                reduce the count).
        """
        count = start.relus()
        if count > budget:
            raise BudgetError(f"circa does not reduce the ReLU count: the start has {count} "
                              f"ReLUs > budget {budget}; put a count-reducing technique first")
        state = _CircaRun.prepare(self.config, ctx, start)
        if not state.sites:
            state.cand.val_accuracy = state.acc0
            state.cand.history.append(self.step_record(
                budget=budget, relus=count, skipped=True, reason="no kept ReLU positions"))
            return [state.cand]
        state.convert_kept_positions()
        k_model, within, sweep = self._sweep_k(state)
        ks = {n: k_model for n in state.sites}
        site_trials = 0
        if self.config.per_site and within:
            ks, site_trials = self._refine_per_site(state, ks, k_model)
        ls = state.configure(ks)
        if self.config.finetune_epochs > 0:
            ls = self._noise_aware_finetune(state, ks)
        return [self._record(state, budget, count, ks, ls, k_model, within, sweep, site_trials)]

    def _sweep_k(self, state: _CircaRun) -> tuple[int, bool, list[dict[str, Any]]]:
        """Model-wide ``k`` by the prefix rule over ascending ``k_choices``.

        Returns (chosen k, whether it is within the tolerance, one record per k tried).
        """
        cfg = self.config
        sweep: list[dict[str, Any]] = []
        chosen: int | None = None
        for k in cfg.k_choices:
            mean, std = state.measure({n: k for n in state.sites})
            drop = state.acc0 - mean
            sweep.append({"k": k, "accuracy": mean, "std": std, "drop": drop})
            state.ctx.emit(type="technique", technique=self.name, event="k-sweep", k=k,
                           accuracy=mean, drop=drop)
            if drop > cfg.tolerance + 1e-12:
                break
            chosen = k
        return (chosen if chosen is not None else cfg.k_choices[0]), chosen is not None, sweep

    def _refine_per_site(self, state: _CircaRun, ks: dict[str, int], k_model: int
                         ) -> tuple[dict[str, int], int]:
        """Site by site, the largest ``k > k_model`` that keeps the model within tolerance.

        Returns (k per site, number of whole-model evaluations spent).
        """
        trials = 0
        for n in state.sites:
            for k in sorted((k for k in self.config.k_choices if k > k_model), reverse=True):
                attempt = dict(ks, **{n: k})
                mean, _ = state.measure(attempt)
                trials += 1
                if state.acc0 - mean <= self.config.tolerance + 1e-12:
                    ks = attempt
                    break
            state.ctx.emit(type="technique", technique=self.name, event="site-k", site=n,
                           k=ks[n])
        return ks, trials

    def _noise_aware_finetune(self, state: _CircaRun, ks: dict[str, int]) -> dict[str, int]:
        """KD fine-tune with the stochastic op in the loop; re-measure ranges; returns ``l``s."""
        cfg = self.config
        _set_generators(state.sites, state.base_seed + 10_000, state.device)
        try:
            train_kd_or_eval(state.ctx, state.cand, epochs=cfg.finetune_epochs,
                             phase=f"{self.name}-finetune", kd_temperature=cfg.kd_temperature)
        finally:
            _set_generators(state.sites, None, state.device)
        for s in state.sites.values():  # ranges may have grown: measure with exact ReLUs
            s.set_circa(0, 64)
        state.max_abs = measure_max_abs(state.model, state.sites, state.ctx.data.val,
                                        batch_size=cfg.batch_size)
        return state.configure(ks)

    def _record(self, state: _CircaRun, budget: int, count: int, ks: dict[str, int],
                ls: dict[str, int], k_model: int, within: bool, sweep: list[dict[str, Any]],
                site_trials: int) -> Candidate:
        """Final seeded measurement, history step, notes and the ``done`` event."""
        cfg, cand = self.config, state.cand
        mean, std, accs = state.accuracy(cfg.repeats)
        cand.val_accuracy = mean
        cand.model.eval()
        relus = cand.relus()
        if relus != count:  # pragma: no cover - Circa never changes the count
            raise BudgetError(f"circa changed the ReLU count {count} -> {relus}")
        per_site_k = cfg.per_site and len(set(ks.values())) > 1
        cand.history.append(self.step_record(
            budget=budget, relus=relus,
            k=(dict(ks) if per_site_k else k_model), l=dict(ls),
            max_abs={n: state.max_abs[n] for n in state.sites},
            start_val_accuracy=state.acc0, fault_val_accuracy=mean, fault_val_std=std,
            fault_val_accuracies=accs, within_tolerance=within, sweep=sweep,
            site_trials=site_trials))
        cand.notes.update({"circa_k": ks, "circa_l": ls, "within_tolerance": within})
        if not within:
            cand.notes["warning"] = (f"even k={k_model} drops val accuracy by "
                                     f"{sweep[0]['drop']:.4f} > tolerance {cfg.tolerance}")
        state.ctx.emit(type="technique", technique=self.name, event="done", k=k_model,
                       val_accuracy=mean, drop=state.acc0 - mean)
        return cand


@dataclass
class _CircaRun:
    """The state one :meth:`Circa.run` works on: the candidate, its kept sites, the
    validation accuracy before Circa (``acc0``) and max |x| per site."""

    config: CircaConfig
    ctx: TechniqueContext
    cand: Candidate
    model: nn.Module
    sites: dict[str, MixedActivation]
    device: torch.device
    base_seed: int
    acc0: float = 0.0
    max_abs: dict[str, float] = field(default_factory=dict)

    @classmethod
    def prepare(cls, config: CircaConfig, ctx: TechniqueContext, start: Candidate) -> _CircaRun:
        """Clone ``start``, find its kept sites, measure its accuracy and ranges."""
        dev = resolve_device(ctx.finetune.device)
        cand = start.clone()
        model = cand.model.to(dev).eval()
        ensure_materialized(model, cand.spec.input_shape)
        sites = {n: s for n, s in iter_sites(model) if bool(_kept_mask(s).any())}
        state = cls(config=config, ctx=ctx, cand=cand, model=model, sites=sites, device=dev,
                    base_seed=ctx.seed * 7_777 + 1)
        stochastic = any(bool((s.kinds == int(Kind.CIRCA)).any()) for s in sites.values())
        state.acc0 = state.accuracy(config.repeats if stochastic else 1)[0]
        if sites:
            state.max_abs = measure_max_abs(model, sites, ctx.data.val,
                                            batch_size=config.batch_size)
        return state

    def accuracy(self, repeats: int) -> tuple[float, float, list[float]]:
        """Seeded validation accuracy (mean, std, per repeat); same seeds for every k."""
        return fault_accuracy(self.model, self.sites, self.ctx.data.val, repeats=repeats,
                              seed=self.base_seed, device=self.ctx.finetune.device,
                              num_classes=self.ctx.data.num_classes,
                              batch_size=self.config.batch_size)

    def convert_kept_positions(self) -> None:
        """Every kept position (RELU or CIRCA) becomes a Circa ReLU."""
        for s in self.sites.values():
            circa = torch.tensor(int(Kind.CIRCA), dtype=torch.int8, device=s.kinds.device)
            s.set_kinds(torch.where(_kept_mask(s), circa, s.kinds))

    def configure(self, ks: dict[str, int]) -> dict[str, int]:
        """Set ``k`` per site and the smallest safe ``l`` for it; returns the ``l``s."""
        ls = {n: choose_l(self.max_abs[n], ks[n], self.config.l_choices,
                          margin=self.config.range_margin) for n in self.sites}
        for n, s in self.sites.items():
            s.set_circa(ks[n], ls[n])
        return ls

    def measure(self, ks: dict[str, int]) -> tuple[float, float]:
        """Configure ``ks`` and return the mean and std of the seeded accuracy."""
        self.configure(ks)
        mean, std, _ = self.accuracy(self.config.repeats)
        return mean, std


__all__ = ["Circa", "CircaConfig", "choose_l", "fault_accuracy", "measure_max_abs"]
