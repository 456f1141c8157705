"""SNL - Selective Network Linearization (Cho et al., ICML'22), with product improvements.

Search: every currently kept ReLU position (RELU or CIRCA) gets a learnable
coefficient ``c`` (init 1; one per position for ``pixel``, one per channel for
``channel`` granularity) and the site computes ``c*site(x) + (1-c)*x``. Weights
and ``c`` are trained jointly with CE + KD(T=4) + ``lambda * sum cost_s |c| n / N``
(``n`` = ReLUs an entry covers, ``N`` = candidate ReLUs at the start of the search);
``lambda`` grows by ``lambda_growth`` after each epoch (from ``warmup_epochs`` on)
whose live count ``#{c > threshold}`` is not a new minimum. One descent passes every
requested budget and stops when the last one is reached (or at
``max_search_epochs``, noted in the candidate); at each budget the state is
snapshotted, binarized by exact top-B over ``|c|`` (never over budget) and KD
fine-tuned with the mask fixed. Positions that are already linearized (IDENTITY,
POLY) keep their kind: they are never candidates and never resurrected.

Under ``objective: latency`` (``ctx.latency`` set) the penalty is round-aware
(``_rounds``): ``lambda * (sum cost_s |c| n + sum_s w_s g_s(c)) / (N + sum_s w_s)``,
``w_s`` the site's rounds on the job's link in ReLU equivalents, ``g_s`` the site's
group norm; the cut keeps ReLUs only in sites the descent left live and closes stray
sites (``stray_share``, see ``_rounds.close_stray_sites``). ``round_weight`` scales
``w_s`` (0: the ReLU-count penalty). Without ``ctx.latency`` nothing changes.

Scale (why the defaults behave the same at 2K and 500K ReLUs):

* Penalty. The official code adds ``alpha * sum |c|`` with ``alpha = 1e-5`` on
  ResNet-18/CIFAR (491,520 positions). The gradient a position gets from the task
  loss shrinks roughly as ``1/N`` (each one is a smaller share of the network), so a
  fixed un-normalised ``alpha`` is ``N`` times too strong on a big net relative to a
  small one (our old ``1e-2`` was ~1000x the paper at 491,520 ReLUs and collapsed
  the mask). We divide the sum by ``N``: ``lambda = alpha * 491,520 = 4.9152`` is
  the paper's value (``SNL_PAPER_LAMBDA``) at any size.
* Mask learning rate. Adam moves each ``c`` by about ``lr`` per step whatever the
  gradient's scale, so what the descent (and the per-epoch ``lambda`` escalation)
  sees is ``lr x steps per epoch``. The paper uses Adam ``1e-3`` at 391 steps per
  epoch (50,000 images, batch 128). ``mask_lr=None`` keeps that per-epoch
  displacement: ``1e-3 x 391 / steps_per_epoch`` (x ``mask_lr_scale``, at most
  0.05): exactly ``1e-3`` on CIFAR at batch 128, ~0.02 on the digits set.
* Length. The paper's descent needs 420-520 epochs for 6-15K ReLUs on
  ResNet-18/CIFAR-100 (third-party log, lambda 1e-5 -> ~1e-3) and caps at 2000;
  ``preset="paper"`` keeps that cap (~4x). The ``fast`` preset escalates lambda
  faster (x1.25 after 2 warm-up epochs instead of x1.1 after 5) and caps at 200.

| field | fast (default) | paper | paper source |
|---|---|---|---|
| lambda_init | 4.9152 (normalised) | 4.9152 | alpha 1e-5 x 491,520 (SNL code) |
| lambda_growth / warmup_epochs | 1.25 / 2 | 1.1 / 5 | SNL code |
| mask_lr | auto (1e-3 at 391 steps/epoch) | 1e-3 | SNL script (Adam) |
| lr (weights, Adam) | 1e-3 | 1e-3 | SNL script |
| threshold | 0.01 | 0.01 | SNL code |
| max_search_epochs | 200 | 2000 | SNL code hard cap |

The search runs through forward hooks on the :class:`MixedActivation` sites, so
the returned candidates are plain prepared models.

This module also holds the mask helpers shared with AutoReP (``GatedSite``,
``gated_sites``, ``apply_selection``).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from pi_opt.activations import Kind
from pi_opt.techniques._masks import (
    begin_mask_run,
    unchanged,
    GatedSite,
    MaskGranularity,
    apply_selection,
    finetune_or_eval,
    gated_sites,
    kept_elements,
    scaled_mask_lr,
    search_state_hooks,
    search_train_config,
    train_search,
    site_cost,
    state_snapshot,
    weights_group,
)
from pi_opt.techniques._rounds import (
    RoundAwareConfig,
    latency_eligibility,
    round_penalty,
    site_round_weights,
)
from pi_opt.techniques.base import (
    Candidate,
    PlanInputs,
    PlannedPhase,
    Technique,
    TechniqueContext,
    register_technique,
)
from pi_opt.training import TrainHooks


# ---------------------------------------------------------------------------
# SNL
# ---------------------------------------------------------------------------
#: Official SNL penalty weight on the un-normalised sum of |c| ...
SNL_PAPER_ALPHA = 1e-5
#: ... tuned on ResNet-18/CIFAR without the stem ReLU (491,520 positions).
SNL_PAPER_RELUS = 491_520
#: The same penalty on our normalised sum (divided by the candidate ReLUs).
SNL_PAPER_LAMBDA = SNL_PAPER_ALPHA * SNL_PAPER_RELUS


class SNLConfig(RoundAwareConfig):
    """SNL search + fine-tune settings; scale rules and the preset table in the module doc.

    lambda_init: weight of the per-ReLU-normalised L1 penalty (see module doc).
    mask_lr: Adam lr of ``c``; None = the paper's per-epoch displacement at this job's
        steps per epoch (x ``mask_lr_scale``).
    max_search_epochs: bound of the descent, which otherwise runs until every budget
        is reached; candidates note ``search_bound_hit`` when it stopped there.
    count_every_steps: the live count (a device sync) is read every N steps and at
        every epoch end.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {
        "lambda_growth": 1.1, "warmup_epochs": 5, "mask_lr": 1e-3, "max_search_epochs": 2000}}
    granularity: MaskGranularity = "pixel"
    lambda_init: float = Field(SNL_PAPER_LAMBDA, gt=0)
    lambda_growth: float = Field(1.25, ge=1.0)
    warmup_epochs: int = Field(2, ge=0)
    threshold: float = Field(0.01, gt=0)
    lr: float = Field(1e-3, gt=0)          # Adam, network weights during the search
    mask_lr: float | None = Field(None, gt=0)  # Adam, the coefficients c (None = scaled)
    mask_lr_scale: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_search_epochs: int = Field(200, ge=1)
    count_every_steps: int = Field(10, ge=1)
    harvest_budgets: list[int] = Field(default_factory=list)
    finetune_epochs: int | None = Field(None, ge=0)
    kd_temperature: float = Field(4.0, gt=0)
    site_costs: dict[str, float] = Field(default_factory=dict)  # per-ReLU cost by site/stage


@dataclass
class _Snapshot:
    budget: int
    state: dict[str, Tensor]
    coeffs: list[Tensor]
    epoch: int
    step: int
    live: int
    lam: float


def _install_coeff_hooks(sites: list[GatedSite], coeffs: list[nn.Parameter],
                         cands: list[Tensor]) -> list[Any]:
    """Hook every site so its output is ``x + c * (f(x) - x)`` at candidate positions
    (``c`` its coefficient tensor, 1 elsewhere); returns the removable handles."""
    def make_hook(c: Tensor, cand: Tensor) -> Callable[..., Tensor]:
        def hook(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            x = args[0]
            cm = torch.where(cand, c, torch.ones((), device=c.device, dtype=c.dtype))
            if x.dim() != 4:
                cm = cm.reshape(-1)
            return x + cm.to(x.dtype) * (out - x)
        return hook

    return [g.site.register_forward_hook(make_hook(c, cd))
            for g, c, cd in zip(sites, coeffs, cands)]


@torch.no_grad()
def _live_count(coeffs: list[nn.Parameter], counts_w: list[Tensor], threshold: float) -> int:
    """Per-sample ReLU count still live: candidate weights whose coefficient > ``threshold``."""
    parts = [((c > threshold).float() * w).sum() for c, w in zip(coeffs, counts_w)]
    return int(torch.stack(parts).sum().round().item()) if parts else 0


def _penalty_weights(ctx: TechniqueContext, cfg: SNLConfig, sites: list[GatedSite],
                     counts_w: list[Tensor]) -> tuple[list[Tensor], list[float], float]:
    """L1 weight of every entry (``site_cost / norm`` per covered ReLU), the sites' round
    weights in ReLU equivalents (``[]`` unless objective latency, see ``_rounds``) and
    ``norm``: N candidate ReLUs, plus the round weights' sum under objective latency."""
    round_w = site_round_weights(ctx, sites, drop_squares=False, scale=cfg.round_weight)
    norm = max(1.0, float(sum(float(w.sum()) for w in counts_w)) + sum(round_w))
    weights = [w * (site_cost(g.name, cfg.site_costs) / norm) for g, w in zip(sites, counts_w)]
    return weights, round_w, norm


@register_technique
class SNL(Technique):
    """Selective Network Linearization with one-descent multi-budget harvesting."""

    name = "snl"
    Config = SNLConfig
    reduces_count = True
    harvests = True
    config: SNLConfig

    def with_harvest(self, budgets: Sequence[int]) -> SNL:
        """A copy that snapshots the descent at ``budgets`` too (``harvest_budgets``)."""
        return SNL(self.config.model_copy(update={"harvest_budgets": [int(b) for b in budgets]}))

    @classmethod
    def suggest(cls, trial: Any, prefix: str) -> dict[str, Any]:
        """Search space: initial L1 weight ``lambda_init``, mask learning-rate scale, threshold
        (log-uniform) and mask granularity.
        """
        return {
            "lambda_init": trial.suggest_float(f"{prefix}lambda_init", SNL_PAPER_LAMBDA / 10,
                                               SNL_PAPER_LAMBDA * 10, log=True),
            "mask_lr_scale": trial.suggest_float(f"{prefix}mask_lr_scale", 0.3, 3.0, log=True),
            "threshold": trial.suggest_float(f"{prefix}threshold", 1e-3, 5e-2, log=True),
            "granularity": trial.suggest_categorical(f"{prefix}granularity", ["pixel", "channel"]),
        }

    def plan_phases(self, inputs: PlanInputs) -> list[PlannedPhase]:
        """The descent (an upper bound: it stops once every budget is met) and one
        fine-tune per budget the trial answers (its own plus harvested ones)."""
        cfg = self.config
        ft = inputs.finetune.epochs if cfg.finetune_epochs is None else cfg.finetune_epochs
        return [PlannedPhase("search", cfg.max_search_epochs, bound=True),
                PlannedPhase("finetune", ft * max(1, inputs.budgets_per_trial))]

    def run(self, ctx: TechniqueContext, start: Candidate, *, budget: int) -> list[Candidate]:
        """Linearize positions (L1-penalised coefficients) down to ``budget`` ReLUs per sample and
        KD fine-tune; with harvest budgets, also a candidate for each one passed on the way
        (first = ``budget``). Raises BudgetError for a negative budget.
        """
        cfg = self.config
        mr = begin_mask_run(ctx, start, budget=budget, granularity=cfg.granularity,
                            finetune_epochs=cfg.finetune_epochs)
        work, sites, start_count, ft_epochs = (
            mr.work, mr.sites, mr.start_count, mr.finetune_epochs)
        harvest = sorted({int(b) for b in cfg.harvest_budgets
                          if 0 <= int(b) < start_count and int(b) != budget}, reverse=True)
        targets = sorted(set(harvest) | ({budget} if budget < start_count else set()),
                         reverse=True)

        results: list[Candidate] = []
        if budget >= start_count:  # nothing to remove: the start already meets the budget
            results.append(unchanged(ctx, start, mr, self.step_record(
                budget=budget, harvested=False, relus=start_count, skipped=True)))
        if not targets:
            return results

        snaps, final, info = self._descend(ctx, work, sites, targets)
        for b in [budget] + harvest:
            if b >= start_count:
                continue
            snap = _Snapshot(**snaps[b]) if b in snaps else None
            harvested = b != budget
            if snap is None and harvested:
                continue  # descent never passed this budget: nothing to harvest
            use = snap or final
            model = copy.deepcopy(work)
            model.load_state_dict(use.state)
            scores = {g.name: g.broadcast(c.abs()) for g, c in zip(sites, use.coeffs)}
            eligible = {g.name: g.cand for g in sites}
            live = [bool(((c > cfg.threshold) & (g.weight.to(c.device) > 0)).any())
                    for g, c in zip(sites, use.coeffs)]  # never open a site the descent dropped
            eligible = latency_eligibility(sites, scores, eligible, live, b,
                                           info["round_weights"], stray_share=cfg.stray_share)
            kept = apply_selection(model, sites, scores, eligible, b, drop_kind=Kind.IDENTITY)
            cand = Candidate(model=model, spec=start.spec.model_copy(deep=True),
                             history=copy.deepcopy(start.history))
            cand.history.append(self.step_record(
                budget=b, harvested=harvested, relus=kept, search_epoch=use.epoch,
                search_step=use.step, live_count=use.live, lam=use.lam))
            bound_hit = snap is None and info["bound_hit"]
            cand.history[-1].update(search_epochs=info["epochs"], search_bound_hit=bound_hit,
                                    mask_lr=info["mask_lr"])
            if info["round_weights"]:
                cand.history[-1]["round_weights"] = info["round_weights"]
            cand.notes.update({"budget": b, "budget_reached": snap is not None,
                               "search_epochs": info["epochs"], "live_count": use.live,
                               "search_bound_hit": bound_hit})
            if snap is None:
                why = (f"the search bound max_search_epochs={cfg.max_search_epochs} was hit"
                       if bound_hit else "the search stopped early")
                cand.notes["warning"] = (
                    f"SNL live count {use.live} did not reach budget {b}: {why}; binarized by "
                    "exact top-B over |c| (raise max_search_epochs or lambda_growth)")
            ctx.emit(type="technique", technique=self.name, event="binarized", budget=b,
                     relus=kept, harvested=harvested)
            finetune_or_eval(ctx, cand, ft_epochs, cfg.kd_temperature, f"{self.name}-finetune")
            results.append(cand)
        return results

    # ---- the descent ----------------------------------------------------
    def _descend(
        self, ctx: TechniqueContext, work: nn.Module, sites: list[GatedSite], targets: list[int],
    ) -> tuple[dict[int, dict[str, Any]], _Snapshot, dict[str, Any]]:
        """The L1 descent: ``(snapshots by budget as _Snapshot fields, final, info)``; its
        state (coefficients, lambda, pending budgets, snapshots) is checkpointed each epoch."""
        cfg = self.config
        dev = next((p.device for p in work.parameters()), torch.device("cpu"))
        coeffs = [nn.Parameter(torch.ones(g.pshape, device=dev)) for g in sites]
        cands = [g.cand.to(dev) for g in sites]
        counts_w = [g.weight.to(dev) for g in sites]
        weights, round_w, norm = _penalty_weights(ctx, cfg, sites, counts_w)
        mask_lr = cfg.mask_lr or scaled_mask_lr(ctx, cfg.mask_lr_scale)
        state = {"lam": cfg.lambda_init, "best": math.inf, "epoch": 0, "step": 0}
        snaps: dict[int, dict[str, Any]] = {}  # _Snapshot fields (checkpoint-safe types)
        pending = list(targets)  # descending

        handles = _install_coeff_hooks(sites, coeffs, cands)
        live_count = functools.partial(_live_count, coeffs, counts_w, cfg.threshold)

        def harvest(step: int, epoch: int) -> int:
            """Snapshot every pending budget the live count has reached (after ``step`` steps)."""
            live = live_count()
            while pending and live <= pending[0]:
                b = pending.pop(0)
                st, cs = state_snapshot(work, list(coeffs))
                snaps[b] = vars(_Snapshot(b, st, cs, epoch, step, live, state["lam"]))
                ctx.emit(type="technique", technique=self.name, event="harvest", budget=b,
                         relus=live, epoch=epoch, step=step, lam=state["lam"])
            return live

        def penalty(model: nn.Module) -> Tensor:
            terms = [(c.abs() * w).sum() for c, w in zip(coeffs, weights)]
            total = torch.stack(terms).sum()
            if round_w:  # objective latency: + the sites' rounds (ReLU equivalents) / norm
                total = total + round_penalty(list(coeffs), counts_w, round_w) / norm
            return state["lam"] * total

        def on_step(model: nn.Module, step: int) -> None:
            state["step"] = step
            if step > 0 and step % cfg.count_every_steps == 0:
                harvest(step, int(state["epoch"]) + 1)  # after `step` steps, inside epoch + 1

        def on_epoch_end(model: nn.Module, epoch: int, val_acc: float) -> bool:
            state["epoch"] = epoch
            state["step"] += 1
            live = harvest(int(state["step"]), epoch)
            lam = state["lam"]
            if live < state["best"]:
                state["best"] = live
            elif epoch >= cfg.warmup_epochs:
                state["lam"] = lam * cfg.lambda_growth
            ctx.emit(type="technique", technique=self.name, epoch=epoch, relus=live, lam=lam,
                     val_accuracy=val_acc, remaining_budgets=list(pending))
            return not pending

        def groups(model: nn.Module) -> list[dict[str, Any]]:
            return [weights_group(model),
                    {"params": coeffs, "lr": mask_lr, "weight_decay": 0.0}]

        tcfg = search_train_config(ctx, epochs=cfg.max_search_epochs, lr=cfg.lr,
                                   weight_decay=cfg.weight_decay, schedule="constant",
                                   kd_temperature=cfg.kd_temperature)
        try:
            if pending:
                res = train_search(ctx, work, tcfg, TrainHooks(
                    extra_loss=penalty, on_sync=on_step, on_epoch_end=on_epoch_end,
                    param_groups=groups, **search_state_hooks(
                        coeffs, {"state": state, "pending": pending, "snaps": snaps})),
                    f"{self.name}-search")
                epochs_run = res.epochs_run
            else:
                epochs_run = 0
        finally:
            for h in handles:
                h.remove()
        st, cs = state_snapshot(work, list(coeffs))
        final = _Snapshot(-1, st, cs, int(state["epoch"]), int(state["step"]), live_count(),
                          state["lam"])
        return snaps, final, {"epochs": epochs_run, "mask_lr": mask_lr, "round_weights": round_w,
                              "bound_hit": bool(pending) and epochs_run >= cfg.max_search_epochs}


__all__ = [
    "SNL", "SNLConfig", "GatedSite", "apply_selection", "gated_sites", "kept_elements",
    "site_cost",
]
