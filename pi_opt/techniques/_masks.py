"""Mask bookkeeping shared by the learned-mask techniques (SNL, AutoReP).

A :class:`GatedSite` exposes the currently kept positions of one MixedActivation at
pixel or channel granularity; :func:`apply_selection` writes an exact top-B choice
back without ever resurrecting a linearized or polynomial position.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pi_opt.activations import Kind, MixedActivation
from pi_opt.errors import BudgetError, ModelFormatError
from pi_opt.sites import iter_sites, site_dict, stage_of
from pi_opt.techniques._common import distill, keep_top
from pi_opt.techniques.base import Candidate, TechniqueContext
from pi_opt.training import TrainConfig, TrainHooks, TrainResult, evaluate, fit, resolve_device

MaskGranularity = Literal["pixel", "channel"]


@dataclass
class GatedSite:
    """Search-time view of one site.

    orig: the site's kinds at search start (int8, kinds shape).
    cand: bool, kinds shape - positions that are candidates (kept: RELU or CIRCA).
    pshape: shape of the per-site search tensor (``[C,H,W]`` pixel, ``[C,1,1]`` channel).
    weight: float ``pshape`` - candidate ReLUs each search entry covers.
    """

    name: str
    site: MixedActivation
    orig: Tensor
    cand: Tensor
    pshape: tuple[int, int, int]
    weight: Tensor

    def broadcast(self, t: Tensor) -> Tensor:
        """A ``pshape`` tensor broadcast to the kinds shape."""
        return t.expand(self.cand.shape) if tuple(t.shape) != tuple(self.cand.shape) else t


def _kept(kinds: Tensor) -> Tensor:
    return (kinds == int(Kind.RELU)) | (kinds == int(Kind.CIRCA))


def gated_sites(model: nn.Module, granularity: MaskGranularity) -> list[GatedSite]:
    """Collect every site of ``model`` for a mask search.

    Unmaterialized sites are materialized (element granularity). The kinds map is
    re-expressed (same kinds) to fit the search: a channel-granular site searched at
    ``pixel`` granularity is expanded to an element map so positions can be kept
    individually; an element map whose channels are uniform is collapsed to a channel
    map for a ``channel`` search, so the result stays channel-structured.
    """
    out: list[GatedSite] = []
    for name, site in iter_sites(model):
        if site.input_shape is None:
            raise ModelFormatError(f"site {name} has no recorded shape; run a forward pass first")
        if not site.materialized:
            site.materialize(site.input_shape)
        c, h, w = site.input_shape
        if granularity == "pixel" and tuple(site.kinds.shape) != (c, h, w):
            site.kinds = site.full_kinds().clone().contiguous()
        elif granularity == "channel" and h * w > 1 and tuple(site.kinds.shape) == (c, h, w):
            first = site.kinds[:, :1, :1]
            if bool((site.kinds == first).all()):
                site.kinds = first.clone().contiguous()
        pshape = (c, h, w) if granularity == "pixel" else (c, 1, 1)
        orig = site.kinds.clone()
        cand = _kept(orig)
        full = cand.expand(c, h, w).float()
        weight = full if pshape == (c, h, w) else full.sum(dim=(1, 2), keepdim=True)
        out.append(GatedSite(name, site, orig, cand, pshape, weight.contiguous()))
    return out


def kept_elements(model: nn.Module) -> int:
    """Kept (RELU + CIRCA) elements over all sites, per sample."""
    return sum(int(_kept(s.full_kinds()).sum()) for _, s in iter_sites(model))


@torch.no_grad()
def apply_selection(
    model: nn.Module,
    sites: list[GatedSite],
    scores: dict[str, Tensor],
    eligible: dict[str, Tensor],
    budget: int,
    *,
    drop_kind: Kind,
) -> int:
    """Keep the top-``budget`` eligible positions (exact, via ``keep_top``); return the count.

    ``scores``/``eligible``: per site name, kinds-shaped. Kept positions keep their
    original kind (RELU or CIRCA); other candidates become ``drop_kind``; positions
    that were not candidates keep their original kind (never resurrected).
    ``model``'s sites are looked up by name, so ``sites`` may describe a copy.
    """
    if budget < 0:
        raise BudgetError(f"budget must be >= 0, got {budget}")
    targets = site_dict(model)
    neg = float("-inf")
    masked = {}
    for g in sites:
        el = eligible[g.name].to(torch.bool).cpu()
        s = torch.nan_to_num(scores[g.name].detach().float().cpu(), nan=neg, posinf=3e38)
        masked[g.name] = torch.where(el, s, torch.full_like(s, neg))
    keep_top(model, masked, budget, drop_kind=drop_kind, keep_kind=Kind.RELU)
    total = 0
    for g in sites:
        site = targets[g.name]
        el = eligible[g.name].to(device=site.kinds.device, dtype=torch.bool)
        orig = g.orig.to(site.kinds.device)
        cand = g.cand.to(site.kinds.device)
        sel = (site.kinds == int(Kind.RELU)) & el & cand
        drop = torch.full_like(orig, int(drop_kind))
        site.set_kinds(torch.where(sel, orig, torch.where(cand, drop, orig)))
        per = int(site.full_kinds().numel() // site.kinds.numel())
        total += int(sel.sum()) * per
    if total > budget:  # pragma: no cover - keep_top guarantees it
        raise BudgetError(f"selection kept {total} > budget {budget}")
    return total


#: Steps per epoch the SNL and AutoReP learning rates were tuned at: CIFAR's 50,000
#: training images at batch 128 (both official scripts).
PAPER_STEPS_PER_EPOCH = 391
#: Their Adam learning rate of the mask parameters (SNL ``c``, AutoReP ``w``).
PAPER_MASK_LR = 1e-3
#: Ceiling of the scaled rate (tiny data sets would otherwise ask for Adam steps > 0.05).
MAX_SCALED_MASK_LR = 0.05


def steps_per_epoch(ctx: TechniqueContext) -> int:
    """Optimizer steps per epoch of this job's mask search (train images / batch size)."""
    return max(1, math.ceil(len(ctx.data.train) / ctx.finetune.batch_size))


def scaled_mask_lr(ctx: TechniqueContext, scale: float = 1.0) -> float:
    """Adam lr of mask parameters with the papers' per-epoch displacement.

    Adam moves a parameter by about ``lr`` per step whatever its gradient's scale, so
    ``lr x steps per epoch`` is what the mask dynamics see per epoch; this keeps the
    papers' ``1e-3 x 391`` at this job's steps per epoch (``scale`` times that, at most
    ``MAX_SCALED_MASK_LR``). CIFAR at batch 128 gets exactly the papers' 1e-3.
    """
    return min(MAX_SCALED_MASK_LR,
               scale * PAPER_MASK_LR * PAPER_STEPS_PER_EPOCH / steps_per_epoch(ctx))


def site_cost(name: str, costs: dict[str, float]) -> float:
    """Per-ReLU cost of a site: by site name, else by stage name, else 1."""
    if name in costs:
        return float(costs[name])
    return float(costs.get(stage_of(name), 1.0))


def state_snapshot(model: nn.Module, extra: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
    """Detached copies of the model's state dict and of the ``extra`` tensors (e.g. masks)."""
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [t.detach().clone() for t in extra])


def finetune_or_eval(ctx: TechniqueContext, cand: Candidate, epochs: int,
                     kd_temperature: float, phase: str) -> None:
    """KD fine-tune (selection on val) or, with 0 epochs, just measure val accuracy."""
    if epochs > 0:
        distill(ctx, cand, epochs=epochs, kd_temperature=kd_temperature, phase=phase)
    else:
        cand.val_accuracy = evaluate(cand.model, ctx.data.val, device=ctx.finetune.device,
                                     num_classes=ctx.data.num_classes).accuracy
    cand.model.eval()


def search_train_config(ctx: TechniqueContext, *, epochs: int, lr: float, weight_decay: float,
                        schedule: str, kd_temperature: float) -> TrainConfig:
    """The mask-search training config: the fine-tune config with Adam, the given epochs,
    learning rate, weight decay, schedule and KD temperature, no best-on-val selection and no
    plateau stop (a search above its budget must go on; a technique applies
    ``ctx.finetune.patience`` itself once at the budget).
    """
    return ctx.finetune.model_copy(update={
        "epochs": epochs, "optimizer": "adam", "lr": lr, "weight_decay": weight_decay,
        "schedule": schedule, "select_on_val": False, "kd_temperature": kd_temperature,
        "kd_weight": 1.0, "seed": ctx.seed, "patience": None})


def train_search(ctx: TechniqueContext, work: nn.Module, config: TrainConfig, hooks: TrainHooks,
                 phase: str) -> TrainResult:
    """Train a mask search (``work`` with its hooks) on the job's training split, KD from the
    teacher, validation each epoch; per-epoch checkpoints in the trial (``ctx.checkpoint``)."""
    return fit(work, ctx.data.train, ctx.data.val, config, teacher=ctx.teacher,
               augment=ctx.data.augment, hooks=hooks, progress=ctx.progress,
               should_stop=ctx.should_stop, phase=phase, checkpoint=ctx.checkpoint(phase))


def search_state_hooks(tensors: Sequence[Tensor], records: dict[str, dict[Any, Any] | list[Any]],
                       generators: Sequence[torch.Generator] = ()) -> dict[str, Callable[..., Any]]:
    """``TrainHooks`` fields ``save_state`` / ``load_state`` for a mask search's own state.

    tensors: the search's parameters outside the model (masks, gates), restored in place.
    records: its mutable bookkeeping (dicts and lists of numbers, strings and tensors, e.g.
        a penalty weight or harvested snapshots), restored in place so the closures that
        hold them see the saved values.
    generators: its own random streams.
    """
    def save_state() -> dict[str, Any]:
        return {"tensors": [t.detach() for t in tensors],
                "records": {k: (dict(v) if isinstance(v, dict) else list(v))
                            for k, v in records.items()},
                "generators": [g.get_state() for g in generators]}

    @torch.no_grad()
    def load_state(saved: dict[str, Any]) -> None:
        for t, v in zip(tensors, saved["tensors"], strict=True):
            t.copy_(v)
        for k, v in records.items():
            if isinstance(v, dict):
                v.clear()
                v.update(saved["records"][k])
            else:
                v[:] = saved["records"][k]
        for g, st in zip(generators, saved["generators"], strict=True):
            g.set_state(st)

    return {"save_state": save_state, "load_state": load_state}


def weights_group(model: nn.Module) -> dict[str, Any]:
    """Optimizer parameter group of the model's trainable weights."""
    return {"params": [p for p in model.parameters() if p.requires_grad]}




@dataclass
class MaskRun:
    """Working state of one learned-mask run: a device copy of the start and its gates."""

    device: torch.device
    work: nn.Module
    sites: list[GatedSite]
    start_count: int
    finetune_epochs: int


def begin_mask_run(ctx: TechniqueContext, start: Candidate, *, budget: int,
                   granularity: MaskGranularity, finetune_epochs: int | None) -> MaskRun:
    """Copy ``start`` to the training device and expose its currently kept positions."""
    if budget < 0:
        raise BudgetError(f"budget must be >= 0, got {budget}")
    dev = resolve_device(ctx.finetune.device)
    work = copy.deepcopy(start.model).to(dev)
    return MaskRun(device=dev, work=work, sites=gated_sites(work, granularity),
                   start_count=kept_elements(work),
                   finetune_epochs=ctx.finetune.epochs if finetune_epochs is None
                   else finetune_epochs)


def unchanged(ctx: TechniqueContext, start: Candidate, run: MaskRun,
              record: dict[str, Any]) -> Candidate:
    """The start itself (it already meets the budget), evaluated on validation."""
    cand = start.clone()
    cand.model.to(run.device)
    cand.history.append(record)
    cand.notes["budget_already_met"] = True
    cand.val_accuracy = evaluate(cand.model, ctx.data.val, device=ctx.finetune.device,
                                 num_classes=ctx.data.num_classes).accuracy
    cand.model.eval()
    return cand
