"""Helpers shared by techniques: exact top-B selection and KD fine-tuning."""

from __future__ import annotations

from typing import Any

import dataclasses

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from pi_opt.activations import Kind
from pi_opt.data import StreamingImages
from pi_opt.errors import BudgetError
from pi_opt.sites import iter_sites
from pi_opt.techniques.base import Candidate, TechniqueContext
from pi_opt.training import TrainConfig, TrainHooks, evaluate, fit

#: A training split: decoded in memory, or streamed from image files.
Split = TensorDataset | StreamingImages


def top_within(scores: Tensor, counts: Tensor, budget: int) -> Tensor:
    """The exact top-``budget`` rule of every cut: bool mask (shape of ``scores``, 1-d) of the
    highest ``scores`` taken in order (ties in index order) while their ``counts`` (elements
    each entry covers, same shape) sum to at most ``budget``."""
    order = torch.argsort(scores, descending=True, stable=True)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[torch.cumsum(counts[order], 0) <= budget]] = True
    return keep


def keep_top(
    model: nn.Module,
    scores: dict[str, Tensor],
    budget: int,
    *,
    drop_kind: Kind = Kind.IDENTITY,
    keep_kind: Kind = Kind.RELU,
) -> int:
    """Keep the ``budget`` highest-scoring positions as ``keep_kind``; the rest ``drop_kind``.

    ``scores[name]`` has the site's kinds shape; each score entry stands for the
    number of per-sample elements it covers (channel scores cover H*W elements),
    so the budget is met exactly in ReLU units (never exceeded). Sites absent
    from ``scores`` keep their current kinds and count against the budget.
    Returns the resulting count of ``keep_kind`` elements in scored sites.
    """
    sites = dict(iter_sites(model))
    fixed = 0
    for name, site in sites.items():
        if name not in scores:
            k = site.full_kinds()
            fixed += int(((k == Kind.RELU) | (k == Kind.CIRCA)).sum())
    remaining = budget - fixed
    if remaining < 0:
        raise BudgetError(f"unscored sites already hold {fixed} ReLUs > budget {budget}")
    flat_scores, weights, owners = [], [], []
    for name, s in scores.items():
        site = sites[name]
        assert site.input_shape is not None
        per = int(site.full_kinds().numel() // site.kinds.numel())
        flat_scores.append(s.detach().flatten().float().cpu())
        weights.append(torch.full((s.numel(),), per, dtype=torch.long))
        owners.append(name)
    if not owners:
        return 0
    allscores = torch.cat(flat_scores)
    keep = top_within(allscores, torch.cat(weights), remaining)
    off = 0
    kept = 0
    for name, s in zip(owners, flat_scores):
        site = sites[name]
        m = keep[off : off + s.numel()].view(site.kinds.shape)
        off += s.numel()
        kinds = torch.where(m, torch.tensor(int(keep_kind), dtype=torch.int8),
                            torch.tensor(int(drop_kind), dtype=torch.int8))
        site.set_kinds(kinds)
        kept += int(m.sum()) * int(site.full_kinds().numel() // site.kinds.numel())
    return kept


def distill(
    ctx: TechniqueContext,
    cand: Candidate,
    *,
    epochs: int | None = None,
    hooks: TrainHooks | None = None,
    select_on_val: bool = True,
    phase: str = "finetune",
    **overrides: Any,
) -> float:
    """KD fine-tune ``cand.model`` from ``ctx.teacher`` with ``ctx.finetune`` settings.

    Returns the best validation accuracy (the weights are left at that epoch when
    ``select_on_val``). Mask buffers are not parameters, so selection never
    changes the ReLU count. Every epoch is reported to ``ctx.report_epoch`` (with
    ``cand.notes["budget"]``, else None: the run's budget); when the search asks the trial
    to stop, the training ends (or, asked before it began, is skipped: validation accuracy
    only) and ``ctx.cut_short()`` records it.
    With ``ctx.fairness_weight > 0`` the training split is resampled toward the
    classes the candidate harms most (:func:`fairness_resample`). With ``ctx.checkpoints``
    every epoch is checkpointed and a re-run of the trial resumes (``ctx.checkpoint``).
    """
    cfg: TrainConfig = ctx.finetune.model_copy(update={
        "select_on_val": select_on_val, "seed": ctx.seed,
        **({"epochs": epochs} if epochs is not None else {}), **overrides})
    if ctx.stop_asked():
        ctx.cut_short()
        cand.model.eval()
        cand.val_accuracy = evaluate(cand.model, ctx.data.val, device=cfg.device,
                                     num_classes=ctx.data.num_classes).accuracy
        return cand.val_accuracy
    train: Split = ctx.data.train
    if ctx.fairness_weight > 0:
        train = fairness_resample(ctx, cand.model, train)
    res = fit(cand.model, train, ctx.data.val, cfg, teacher=ctx.teacher,
              augment=ctx.data.augment, hooks=_reporting_hooks(ctx, cand, hooks, phase, cfg.epochs),
              progress=ctx.progress, should_stop=ctx.should_stop, phase=phase,
              checkpoint=ctx.checkpoint(phase))
    cand.val_accuracy = res.best_val_accuracy
    return res.best_val_accuracy


def _reporting_hooks(ctx: TechniqueContext, cand: Candidate, hooks: TrainHooks | None,
                     phase: str, epochs: int) -> TrainHooks | None:
    """``hooks`` plus an epoch-end report of validation accuracy to the search (a stop
    request at the last epoch cuts nothing here: the next training step skips instead)."""
    if ctx.early_stop is None:
        return hooks
    budget = cand.notes.get("budget")  # set by techniques that fine-tune several budgets
    inner = hooks.on_epoch_end if hooks is not None else None
    kind = phase.rsplit("-", 1)[-1]  # "snl-finetune" -> "finetune", "deepreduce-train" -> "train"

    def on_epoch_end(model: nn.Module, epoch: int, val_acc: float) -> bool:
        stop = bool(inner(model, epoch, val_acc)) if inner is not None else False
        if ctx.report_epoch(budget, kind, epoch, val_acc) and epoch < epochs:
            ctx.cut_short()
            return True
        return stop

    return dataclasses.replace(hooks or TrainHooks(), on_epoch_end=on_epoch_end)


@torch.no_grad()
def per_class_drop(ctx: TechniqueContext, model: nn.Module, data: TensorDataset) -> Tensor:
    """Per-class accuracy drop of ``model`` against the teacher on ``data`` ([K], >= 0)."""
    k = ctx.data.num_classes
    base = torch.tensor(evaluate(ctx.teacher, data, num_classes=k).per_class)
    mine = torch.tensor(evaluate(model, data, num_classes=k).per_class)
    return torch.nan_to_num(base - mine, nan=0.0).clamp_min(0.0)


def fairness_resample(ctx: TechniqueContext, model: nn.Module, train: Split,
                      *, probe: int = 2048) -> Split:
    """Same-size resample of ``train`` (seeded, with replacement) that draws class ``c`` with
    weight ``1 + fairness_weight * drop_c / max(drop)``; ``drop`` is the per-class accuracy
    drop against the teacher on the first ``probe`` training samples. Equivalent in
    expectation to re-weighting the loss toward the most harmed classes; the number of
    images per epoch is unchanged. Returns ``train`` itself when no class is harmed; a
    streamed split stays streamed (only the ``probe`` samples are decoded here).
    """
    x, y = train.tensors
    drop = per_class_drop(ctx, model, TensorDataset(x[:probe], y[:probe]))
    if float(drop.max()) <= 0:
        return train
    class_w = 1.0 + ctx.fairness_weight * drop / drop.max()
    gen = torch.Generator().manual_seed(ctx.seed)
    idx = torch.multinomial(class_w[y], len(y), replacement=True, generator=gen)
    if isinstance(train, StreamingImages):
        return train.subset(idx.tolist())
    return TensorDataset(x[idx], y[idx])
