"""Helpers shared by techniques: exact top-B selection and KD fine-tuning."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pi_opt.activations import Kind
from pi_opt.errors import BudgetError
from pi_opt.sites import iter_sites
from pi_opt.techniques.base import Candidate, TechniqueContext
from pi_opt.training import TrainConfig, TrainHooks, fit


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
    allw = torch.cat(weights)
    order = torch.argsort(allscores, descending=True, stable=True)
    cum = torch.cumsum(allw[order], 0)
    keep_sorted = cum <= remaining
    keep = torch.zeros_like(allscores, dtype=torch.bool)
    keep[order[keep_sorted]] = True
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
    changes the ReLU count.
    """
    cfg: TrainConfig = ctx.finetune.model_copy(update={
        "select_on_val": select_on_val, "seed": ctx.seed,
        **({"epochs": epochs} if epochs is not None else {}), **overrides})
    res = fit(cand.model, ctx.data.train, ctx.data.val, cfg, teacher=ctx.teacher,
              augment=ctx.data.augment, hooks=hooks, progress=ctx.progress,
              should_stop=ctx.should_stop, phase=phase)
    cand.val_accuracy = res.best_val_accuracy
    return res.best_val_accuracy
