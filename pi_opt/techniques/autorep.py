"""AutoReP (Peng et al., ICCV'23): gated ReLU / polynomial replacement with DaPa init.

Every currently kept ReLU position (RELU or CIRCA; ``pixel``) or channel
(``channel``) gets an auxiliary weight ``w`` and a binary gate ``m`` (1 = keep the
ReLU). Before each training step ``m`` follows ``w`` with hysteresis ``t``
(1 -> 0 only when ``w < -t``, 0 -> 1 only when ``w > t``); the forward pass uses
``m`` and the backward pass hands ``dL/dm * softplus(w)`` to ``w`` (straight-through).
A site computes ``m*site(x) + (1-m)*p_c(x)`` with a per-channel polynomial ``p_c``
initialized by DaPa from running statistics of the site input (refreshed every
``dapa_refresh_every`` steps for the first ``dapa_refresh_steps`` steps, trainable
afterwards). Loss: CE + KD(T=4) + ``lam * relu(density - budget/N)``, density taken
through the straight-through gates, ``N`` = candidate ReLUs.

At the end the gates are projected to exactly <= budget ReLUs (top-B over ``w``
among the gates that are on), the learned coefficients are written into the sites
(``MixedActivation.set_poly``) and the model is KD fine-tuned with masks fixed.
With ``ctx.finetune.patience`` set (a search's default), the search ends early once the
gates meet the budget and validation accuracy has not improved for that many epochs
(``pi_opt.training.Plateau``); the best in-budget epoch is kept as always.
Existing IDENTITY / POLY positions are never gated (never resurrected); existing
POLY channels keep their coefficients as the starting point of ``p_c``.

Under ``objective: latency`` (``ctx.latency`` set) the loss adds the sites' rounds
(``_rounds``): ``lam * sum_s w_s g_s(m) / (N + sum_s w_s)`` through the straight-through
gates (``w_s``: the rounds a site with any ReLU pays over a polynomial-only site, in
ReLU equivalents on the job's link), and the projection keeps ReLUs only in sites with a
gate still on and closes stray sites (``stray_share``, ``_rounds.close_stray_sites``).
``round_weight`` scales ``w_s`` (0: the hinge only).

Scale (why the defaults behave the same at 2K and 500K ReLUs):

* The hinge is on the density (kept / ``N``), so ``lam`` is already per-ReLU
  normalised: the official values (40-240) mean the same at any size.
* Gate learning rate: Adam moves ``w`` by about ``lr`` per step, so the gates'
  speed per epoch is ``lr x steps per epoch``; ``mask_lr=None`` keeps the official
  ``1e-3`` at 391 steps per epoch (CIFAR, batch 128) for this job's steps per epoch
  (see ``_masks.scaled_mask_lr``); the official CLI default 0.02 and our old fixed
  0.02 were 20x that on CIFAR.
* Mixed precision: the polynomial, the blend and the density hinge are computed in
  float32 whatever autocast does (``x^2`` overflows float16 from ``|x|`` ~ 256),
  and ``w`` stays a float32 parameter, so bf16/fp16 training keeps the gate dynamics.
* Mask dropout: with probability ``mask_dropout`` per step and site the site runs
  its all-ReLU output (official option, 0.01), which keeps every ReLU's path trained.

| field | fast (default) | paper | paper source |
|---|---|---|---|
| search_epochs | 20 | 200 (80 on TinyImageNet) | AutoReP scripts (mask_epochs) |
| lam | 10 | 40 (ResNet-18 C100 >= 25K; 60 at 15K, 80 at 12.9K, 240 WRN Tiny) | scripts (lamda) |
| mask_lr / mask_beta1 | auto (1e-3 at 391 steps/epoch) / 0.5 | 1e-3 / 0.9 | scripts (w_mask_lr, Adam) |
| schedule | constant | cosine | scripts (optim cosine) |
| threshold | 0.003 | 0.003 | scripts |
| x2_scale / a0_scale / a2_scale / var_min | 1 / 1 / 1 / 1e-4 | 0.1 / 0.2 / 0.01 / 0.5 | code heuristics (brief 3.2) |
| dapa_refresh_steps | 200 | 508 | code |
| finetune_epochs | ctx | 0 | scripts (epochs 0) |
| mask_dropout | 0.01 | 0.01 | issue 9 (official option) |
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
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
    scaled_mask_lr,
    search_state_hooks,
    search_train_config,
    train_search,
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
from pi_opt.techniques.dapa import dapa_coefficients
from pi_opt.training import Plateau, TrainHooks


# ---------------------------------------------------------------------------
# gate primitives
# ---------------------------------------------------------------------------
class _STEGate(torch.autograd.Function):
    """Forward: the binary gate ``m``; backward: ``grad * softplus(w)`` to ``w``."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, m: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        return m.detach().to(w.dtype).clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (w,) = ctx.saved_tensors
        return grad * F.softplus(w), None


def ste_gate(w: Tensor, m: Tensor) -> Tensor:
    """Gate value ``m`` whose gradient flows to ``w`` scaled by ``softplus(w)``."""
    return _STEGate.apply(w, m)


@torch.no_grad()
def hysteresis_update(m: Tensor, w: Tensor, threshold: float) -> Tensor:
    """New gates: an on gate turns off only when ``w < -t``; an off one turns on only if ``w > t``."""
    on = m > 0.5
    return torch.where(on, w >= -threshold, w > threshold).to(m.dtype)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
class AutoRePConfig(RoundAwareConfig):
    """AutoReP search + fine-tune settings; scale rules and preset table in the module doc.

    mask_lr: Adam lr of the gates' ``w``; None = the official per-epoch speed at this
        job's steps per epoch (x ``mask_lr_scale``).
    mask_dropout: per step and site, probability of running the all-ReLU output.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {
        "search_epochs": 200, "lam": 40.0, "mask_lr": 1e-3, "mask_beta1": 0.9,
        "schedule": "cosine", "x2_scale": 0.1, "a0_scale": 0.2, "a2_scale": 0.01,
        "var_min": 0.5, "dapa_refresh_steps": 508, "finetune_epochs": 0}}
    granularity: MaskGranularity = "pixel"
    search_epochs: int = Field(20, ge=1)
    lam: float = Field(10.0, ge=0)          # hinge weight on (density - budget/N)
    threshold: float = Field(0.003, ge=0)     # hysteresis t
    w_init: Literal["uniform"] | float = "uniform"  # Uniform(0,1) as the paper, or a constant
    lr: float = Field(1e-3, gt=0)             # Adam, network weights
    schedule: Literal["cosine", "constant"] = "constant"  # search lr schedule (all groups)
    mask_lr: float | None = Field(None, gt=0)  # Adam, auxiliary weights w (None = scaled)
    mask_lr_scale: float = Field(1.0, gt=0)
    mask_beta1: float = Field(0.5, ge=0, lt=1)  # Adam beta1 of w (lower = less overshoot)
    mask_dropout: float = Field(0.01, ge=0, lt=1)
    poly_lr: float = Field(1e-3, gt=0)        # Adam, polynomial coefficients
    weight_decay: float = Field(0.0, ge=0)
    degree: Literal[1, 2] = 2
    dapa_refresh_every: int = Field(10, ge=1)
    dapa_refresh_steps: int = Field(200, ge=0)
    dapa_calib_batches: int = Field(4, ge=1)  # batches for the initial statistics
    stats_momentum: float = Field(0.1, gt=0, le=1)
    var_min: float = Field(1e-4, gt=0)        # variance floor for DaPa
    a0_scale: float = 1.0                     # heuristic scalings of the closed form
    a2_scale: float = 1.0
    x2_scale: float = Field(1.0, gt=0)        # forward multiplier of the x^2 term
    clip_x2: float | None = Field(None, gt=0)  # clip of the effective x^2 coefficient
    select_on_val: bool = True                # keep the best-val search epoch within budget
    fill_budget: bool = True                  # projection may re-enable off gates (highest w)
    finetune_epochs: int | None = Field(None, ge=0)
    kd_temperature: float = Field(4.0, gt=0)
    # warm start: begin from the gates of the nearest larger budget this job already
    # searched (same start and settings; cached under ctx.workdir), for fewer epochs
    warm_start: bool = False
    warm_search_epochs: int = Field(8, ge=1)


# ---------------------------------------------------------------------------
# per-site search state
# ---------------------------------------------------------------------------
@dataclass
class _Gate:
    g: GatedSite
    w: nn.Parameter          # pshape
    m: Tensor                # pshape, float 0/1
    coef: nn.Parameter       # [C, 3] raw (a2 before x2_scale)
    cand_f: Tensor           # kinds shape, float
    poly_f: Tensor           # kinds shape, float (positions already POLY)
    refresh: Tensor          # [C] bool - DaPa-managed channels
    weight: Tensor           # pshape float (candidate ReLUs per entry)
    mean: Tensor             # [C]
    var: Tensor              # [C]
    acc: list[Tensor]        # calibration sums [count, sum, sumsq]


def _channel_moments(x: Tensor) -> tuple[Tensor, Tensor, int]:
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    xf = x.detach().float()
    n = x.numel() // x.shape[1]
    return xf.sum(dims), (xf * xf).sum(dims), n


def _blend_hook(i: int, gt: _Gate, *, dropped: list[bool], mode: dict[str, bool],
                momentum: float, effective: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    """Forward hook of gate ``i`` during the search: ``out + mix * (p_c(x) - out)``.

    ``mix`` [C, H, W] (or [F]) is the polynomial weight per position (1 - STE gate on
    candidates, 1 on positions already polynomial); ``p_c`` is the channel's degree-2
    polynomial (``effective(gt.coef)`` [C, 3]), evaluated in float32. While ``mode["collect"]``
    or training, the site input's channel moments feed the DaPa statistics (EMA with
    ``momentum``). A site drawn in ``dropped`` runs all ReLUs this step (mask dropout).
    """
    def hook(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        x = args[0]
        if mod.training and dropped[i]:
            return out
        if mode["collect"] or mod.training:
            _track_moments(gt, x, collect=mode["collect"], momentum=momentum)
        gate = ste_gate(gt.w, gt.m)
        mix = gt.cand_f * (1.0 - gate) + gt.poly_f
        eff = effective(gt.coef)
        shape: tuple[int, ...]
        if x.dim() == 4:
            shape = (1, -1, 1, 1)
        else:
            shape = (1, -1)
            mix = mix.reshape(-1)
        xf, of = x.float(), out.float()  # float32 under autocast (x^2 overflows fp16)
        p = eff[:, 0].view(shape) + xf * (eff[:, 1].view(shape) + xf * eff[:, 2].view(shape))
        return (of + mix * (p - of)).to(out.dtype)
    return hook


@torch.no_grad()
def _track_moments(gt: _Gate, x: Tensor, *, collect: bool, momentum: float) -> None:
    """Accumulate (``collect``) or EMA-update the per-channel mean/variance of site input ``x``."""
    s, sq, n = _channel_moments(x)
    if collect:
        gt.acc[0] += n
        gt.acc[1] += s
        gt.acc[2] += sq
    else:
        mean = s / n
        var = (sq / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
        gt.mean.lerp_(mean, momentum)
        gt.var.lerp_(var, momentum)


def _gate_rounds(gates: list[_Gate], round_weights: list[float]) -> Tensor:
    """The sites' rounds in ReLU equivalents (``_rounds.round_penalty``) through the
    straight-through gates: only gates that are on carry it, to their ``w``."""
    return round_penalty([ste_gate(gt.w.float(), gt.m.float()) for gt in gates],
                         [gt.weight.float() for gt in gates], round_weights)


@torch.no_grad()
def _restore(work: nn.Module, tensors: list[Tensor], snap: Any) -> None:
    """Load a ``state_snapshot`` (model state, gate tensors) back into ``work`` and ``tensors``."""
    state, saved = snap
    work.load_state_dict(state)
    for dst, src in zip(tensors, saved):
        dst.copy_(src)


@register_technique
class AutoReP(Technique):
    """Hysteresis-gated ReLU -> DaPa polynomial replacement with a density hinge."""

    name = "autorep"
    Config = AutoRePConfig
    reduces_count = True
    config: AutoRePConfig

    @classmethod
    def suggest(cls, trial: Any, prefix: str) -> dict[str, Any]:
        """Search space: hinge weight ``lam``, mask learning-rate scale, threshold (log-uniform)
        and mask granularity.
        """
        return {
            "lam": trial.suggest_float(f"{prefix}lam", 3.0, 100.0, log=True),
            "mask_lr_scale": trial.suggest_float(f"{prefix}mask_lr_scale", 0.3, 3.0, log=True),
            "threshold": trial.suggest_float(f"{prefix}threshold", 1e-4, 1e-2, log=True),
            "granularity": trial.suggest_categorical(f"{prefix}granularity", ["pixel", "channel"]),
        }

    # ---- helpers -------------------------------------------------------------
    def _effective(self, coef: Tensor) -> Tensor:
        """Coefficients as evaluated: (a0, a1, a2 * x2_scale [clipped], a2 = 0 for degree 1)."""
        cfg = self.config
        a2 = coef[:, 2] * cfg.x2_scale
        if cfg.clip_x2 is not None:
            a2 = a2.clamp(-cfg.clip_x2, cfg.clip_x2)
        if cfg.degree == 1:
            a2 = torch.zeros_like(a2)
        return torch.stack([coef[:, 0], coef[:, 1], a2], dim=1)

    @torch.no_grad()
    def _dapa(self, gate: _Gate) -> None:
        cfg = self.config
        std = gate.var.clamp_min(cfg.var_min).sqrt()
        new = dapa_coefficients(gate.mean, std, cfg.degree).to(gate.coef.dtype)
        new[:, 0] *= cfg.a0_scale
        new[:, 2] *= cfg.a2_scale / cfg.x2_scale
        gate.coef.copy_(torch.where(gate.refresh[:, None], new, gate.coef))

    def _make_gates(self, ctx: TechniqueContext, sites: list[GatedSite],
                    dev: torch.device) -> list[_Gate]:
        cfg = self.config
        gen = torch.Generator().manual_seed(ctx.seed)
        gates = []
        for g in sites:
            c = g.pshape[0]
            if cfg.w_init == "uniform":
                w0 = torch.rand(g.pshape, generator=gen)
            else:
                w0 = torch.full(g.pshape, float(cfg.w_init))
            weight = g.weight.to(dev)
            kinds = g.orig.to(dev)
            poly_f = (kinds == int(Kind.POLY)).float()
            has_poly = poly_f.expand(g.site.full_kinds().shape).flatten(1).sum(1) > 0
            coef = torch.zeros(c, 3, device=dev)
            if g.site.poly.numel() == 3 * c:
                old = g.site.poly.to(dev, torch.float32)
                coef[:, 0], coef[:, 1] = old[:, 0], old[:, 1]
                coef[:, 2] = old[:, 2] / cfg.x2_scale
                refresh = ~has_poly
            else:
                refresh = torch.ones(c, dtype=torch.bool, device=dev)
            gates.append(_Gate(
                g=g, w=nn.Parameter(w0.to(dev)), m=(weight > 0).float(),
                coef=nn.Parameter(coef), cand_f=g.cand.to(dev).float(), poly_f=poly_f,
                refresh=refresh.to(dev), weight=weight,
                mean=torch.zeros(c, device=dev), var=torch.ones(c, device=dev),
                acc=[torch.zeros((), device=dev), torch.zeros(c, device=dev),
                     torch.zeros(c, device=dev)]))
        return gates

    def plan_phases(self, inputs: PlanInputs) -> list[PlannedPhase]:
        """The joint gate/weight/polynomial search and the fine-tune with masks fixed."""
        cfg = self.config
        ft = inputs.finetune.epochs if cfg.finetune_epochs is None else cfg.finetune_epochs
        return [PlannedPhase("search", cfg.search_epochs), PlannedPhase("finetune", ft)]

    # ---- run -------------------------------------------------------------------
    def run(self, ctx: TechniqueContext, start: Candidate, *, budget: int) -> list[Candidate]:
        """Learn gates choosing ReLU or polynomial per position under a density hinge, cut to
        ``budget`` kept ReLUs per sample and fine-tune; one candidate (the start, evaluated,
        when it already meets the budget). Raises BudgetError for a negative budget.
        """
        cfg = self.config
        mr = begin_mask_run(ctx, start, budget=budget, granularity=cfg.granularity,
                            finetune_epochs=cfg.finetune_epochs)
        dev, work, sites, start_count, ft_epochs = (
            mr.device, mr.work, mr.sites, mr.start_count, mr.finetune_epochs)
        if budget >= start_count:
            return [unchanged(ctx, start, mr, self.step_record(
                budget=budget, relus=start_count, skipped=True))]

        gates = self._make_gates(ctx, sites, dev)
        warm = _WarmGates(ctx, start, cfg) if cfg.warm_start else None
        warmed = warm is not None and warm.load(gates, budget)
        info = self._search(ctx, work, gates, budget, start_count,
                            epochs=cfg.warm_search_epochs if warmed else cfg.search_epochs)
        info["warm_started"] = warmed
        if warm is not None:
            warm.save(gates, budget)

        # projection: exact top-B over w, gates that are on first (off gates only with
        # fill_budget, ranked after every on gate); the rest -> POLY
        scores, eligible = self._projection_scores(gates)
        live = [bool(((gt.m > 0.5) & (gt.weight > 0)).any())
                for gt in gates]  # never open a site the search dropped
        eligible = latency_eligibility(sites, scores, eligible, live, budget,
                                       info["round_weights"], stray_share=cfg.stray_share)
        kept = apply_selection(work, sites, scores, eligible, budget, drop_kind=Kind.POLY)
        poly_elems = 0
        for gt in gates:
            site = gt.g.site
            n_poly = int((site.full_kinds() == int(Kind.POLY)).sum())
            if n_poly:
                site.set_poly(self._effective(gt.coef.detach()))
                poly_elems += n_poly
        for p in work.parameters():
            p.grad = None
        cand = Candidate(model=work, spec=start.spec.model_copy(deep=True),
                         history=copy.deepcopy(start.history))
        cand.history.append(self.step_record(
            budget=budget, relus=kept, poly_elements=poly_elems, search_epoch=info["epoch"],
            live_count=info["live"], mask_lr=info["mask_lr"]))
        if info["round_weights"]:
            cand.history[-1]["round_weights"] = info["round_weights"]
        cand.notes.update({"search_epochs": info["epochs"], "live_count": info["live"],
                           "warm_started": info["warm_started"],
                           "search_val_accuracy": info["val"]})
        ctx.emit(type="technique", technique=self.name, event="projected", budget=budget,
                 relus=kept, poly_elements=poly_elems)
        finetune_or_eval(ctx, cand, ft_epochs, cfg.kd_temperature, f"{self.name}-finetune")
        return [cand]

    def _search(self, ctx: TechniqueContext, work: nn.Module, gates: list[_Gate], budget: int,
                total: int, *, epochs: int) -> dict[str, Any]:
        cfg = self.config
        target = budget / total
        mode = {"collect": False}
        mask_lr = cfg.mask_lr or scaled_mask_lr(ctx, cfg.mask_lr_scale)
        drop_gen = torch.Generator().manual_seed(ctx.seed + 17)
        dropped = [False] * len(gates)
        handles = [gt.g.site.register_forward_hook(
                       _blend_hook(i, gt, dropped=dropped, mode=mode, momentum=cfg.stats_momentum,
                                   effective=self._effective))
                   for i, gt in enumerate(gates)]
        best: dict[str, Any] = {"val": -1.0, "snap": None, "epoch": 0}
        round_w = site_round_weights(ctx, [gt.g for gt in gates], drop_squares=cfg.degree == 2,
                                     scale=cfg.round_weight)  # [] unless objective latency
        last = {"live": total, "epoch": 0}
        plateau = Plateau(ctx.finetune.patience, ctx.finetune.min_delta)  # at the budget only

        @torch.no_grad()
        def live_count() -> int:
            return int(torch.stack([(gt.m * gt.weight).sum() for gt in gates]).sum().round())

        def on_step(model: nn.Module, step: int) -> None:
            with torch.no_grad():
                for gt in gates:
                    gt.m.copy_(hysteresis_update(gt.m, gt.w, cfg.threshold))
                if cfg.mask_dropout > 0:
                    draws = torch.rand(len(gates), generator=drop_gen) < cfg.mask_dropout
                    dropped[:] = draws.tolist()
                if 0 < step < cfg.dapa_refresh_steps and step % cfg.dapa_refresh_every == 0:
                    for gt in gates:
                        self._dapa(gt)

        def hinge(model: nn.Module) -> Tensor:
            dens = torch.stack([(ste_gate(gt.w.float(), gt.m.float()) * gt.weight.float()).sum()
                                for gt in gates]).sum()
            loss = cfg.lam * torch.relu(dens / total - target)
            if round_w:
                loss = loss + cfg.lam * _gate_rounds(gates, round_w) / (total + sum(round_w))
            return loss

        def on_epoch_end(model: nn.Module, epoch: int, val_acc: float) -> bool:
            live = live_count()
            last.update(live=live, epoch=epoch)
            if cfg.select_on_val and live <= budget and val_acc > best["val"]:
                best.update(val=val_acc, epoch=epoch, live=live,
                            snap=state_snapshot(model, self._tensors(gates)))
            ctx.emit(type="technique", technique=self.name, epoch=epoch, relus=live,
                     density=live / total, val_accuracy=val_acc)
            # at the budget, the gated network's accuracy is a comparable early report
            if live <= budget and ctx.report_epoch(None, "search", epoch, val_acc) \
                    and epoch < epochs:
                ctx.cut_short()  # the search ends here; the fine-tune is skipped
                return True
            return live <= budget and plateau.update(val_acc)  # settled: the fine-tune follows

        def groups(model: nn.Module) -> list[dict[str, Any]]:
            return [weights_group(model),
                    {"params": [gt.w for gt in gates], "lr": mask_lr, "weight_decay": 0.0,
                     "betas": (cfg.mask_beta1, 0.999)},
                    {"params": [gt.coef for gt in gates], "lr": cfg.poly_lr, "weight_decay": 0.0}]

        tcfg = search_train_config(ctx, epochs=epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   schedule=cfg.schedule, kd_temperature=cfg.kd_temperature)
        try:
            self._calibrate(ctx, work, gates, mode, tcfg.batch_size)
            res = train_search(ctx, work, tcfg, TrainHooks(
                extra_loss=hinge, on_step=on_step, on_epoch_end=on_epoch_end,
                param_groups=groups, **search_state_hooks(  # checkpointed each epoch
                    self._tensors(gates), {"best": best, "last": last,
                                           "plateau": plateau.record}, [drop_gen])),
                f"{self.name}-search")
        finally:
            for h in handles:
                h.remove()
        if best["snap"] is not None:
            _restore(work, self._tensors(gates), best["snap"])
        kept = best if best["snap"] is not None else {**last, "val": float("nan")}
        return {"epochs": res.epochs_run, "epoch": kept["epoch"], "live": kept["live"],
                "mask_lr": mask_lr, "val": kept["val"], "round_weights": round_w}

    def _projection_scores(self, gates: list[_Gate]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        with torch.no_grad():
            big = 2.0 * max((float(gt.w.abs().max()) for gt in gates if gt.w.numel()),
                            default=0.0) + 1.0
            scores, eligible = {}, {}
            for gt in gates:
                on = gt.m > 0.5
                s = torch.where(on, gt.w, gt.w - big) if self.config.fill_budget else gt.w
                el = gt.g.cand.to(on.device)
                if not self.config.fill_budget:
                    el = el & gt.g.broadcast(on)
                scores[gt.g.name] = gt.g.broadcast(s.detach())
                eligible[gt.g.name] = el
        return scores, eligible

    @staticmethod
    def _tensors(gates: list[_Gate]) -> list[Tensor]:
        out: list[Tensor] = []
        for gt in gates:
            out += [gt.w, gt.m, gt.coef, gt.mean, gt.var]
        return out

    @torch.no_grad()
    def _calibrate(self, ctx: TechniqueContext, work: nn.Module, gates: list[_Gate],
                   mode: dict[str, bool], batch_size: int) -> None:
        """Exact per-channel mean/var of every site input over a few train batches -> DaPa."""
        x_all = ctx.data.train.tensors[0]
        dev = gates[0].w.device if gates else torch.device("cpu")
        was = work.training
        work.eval()
        mode["collect"] = True
        try:
            for i in range(min(self.config.dapa_calib_batches,
                               -(-len(x_all) // batch_size))):
                work(x_all[i * batch_size:(i + 1) * batch_size].to(dev))
        finally:
            mode["collect"] = False
            work.train(was)
        for gt in gates:
            n = gt.acc[0].clamp_min(1)
            mean = gt.acc[1] / n
            gt.mean.copy_(mean)
            gt.var.copy_((gt.acc[2] / n - mean * mean).clamp_min(0))
            self._dapa(gt)


class _WarmGates:
    """Gate cache of one job for warm starts: ``<ctx.workdir>/autorep-gates/<key>/<budget>.pt``
    holds the searched ``w`` and ``m`` of every gate; ``key`` covers the start's recipe, the
    settings (warm fields aside) and the job seed."""

    def __init__(self, ctx: TechniqueContext, start: Candidate, cfg: AutoRePConfig) -> None:
        settings = cfg.model_dump(mode="json", exclude={"warm_start", "warm_search_epochs"})
        key = hashlib.sha256(json.dumps([start.history, settings, ctx.job_seed],
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = ctx.workdir / "autorep-gates" / key

    def load(self, gates: list[_Gate], budget: int) -> bool:
        """Copy the nearest larger budget's gates into ``gates``; False when none fits."""
        larger = sorted(int(p.stem) for p in self.dir.glob("*.pt") if int(p.stem) > budget)
        if not larger:
            return False
        saved = torch.load(self.dir / f"{larger[0]}.pt", map_location="cpu")
        if [tuple(w.shape) for w, _ in saved] != [tuple(gt.w.shape) for gt in gates]:
            return False
        with torch.no_grad():
            for gt, (w, m) in zip(gates, saved):
                gt.w.copy_(w.to(gt.w.device))
                gt.m.copy_(m.to(gt.m.device))
        return True

    def save(self, gates: list[_Gate], budget: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{budget}.{os.getpid()}.tmp"
        torch.save([(gt.w.detach().cpu(), gt.m.detach().cpu()) for gt in gates], tmp)
        os.replace(tmp, self.dir / f"{budget}.pt")


__all__ = ["AutoReP", "AutoRePConfig", "hysteresis_update", "ste_gate"]
