"""Training, distillation and evaluation loops (CPU or CUDA).

Datasets are ``TensorDataset(x [N,C,H,W] float32, y [N] int64)``; batches are
drawn with a seeded generator so runs are reproducible on the same device.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from pi_opt.errors import Cancelled
from pi_opt.training._config import TrainConfig, resolve_device

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


@dataclass
class TrainHooks:
    """Optional technique hooks.

    extra_loss(model) -> scalar added to the loss each step (penalties).
    on_step(model, step) runs before each step's forward pass (gate updates).
    on_epoch_end(model, epoch, val_acc) -> True to stop early.
    param_groups(model) -> optimizer parameter groups (default: all trainable parameters).
    """

    extra_loss: Callable[[nn.Module], Tensor] | None = None
    on_step: Callable[[nn.Module, int], None] | None = None
    on_epoch_end: Callable[[nn.Module, int, float], bool | None] | None = None
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    per_class: list[float]
    n: int


@dataclass
class TrainResult:
    best_val_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton distillation: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
    ) * (t * t)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TensorDataset, *, batch_size: int = 512, device: str = "auto",
    num_classes: int | None = None,
) -> EvalResult:
    """Top-1 accuracy, mean CE loss and per-class accuracy (eval mode)."""
    dev = resolve_device(device)
    x_all, y_all = data.tensors
    k = num_classes or int(y_all.max()) + 1
    was = model.training
    model.eval().to(dev)
    correct = torch.zeros(k)
    total = torch.zeros(k)
    loss = 0.0
    for i in range(0, len(y_all), batch_size):
        x = x_all[i : i + batch_size].to(dev)
        y = y_all[i : i + batch_size].to(dev)
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        hit = (out.argmax(1) == y).float().cpu()
        yc = y.cpu()
        correct.index_add_(0, yc, hit)
        total.index_add_(0, yc, torch.ones_like(hit))
    model.train(was)
    n = int(total.sum())
    per_class = [float(c / t) if t > 0 else float("nan") for c, t in zip(correct, total)]
    return EvalResult(accuracy=float(correct.sum() / max(n, 1)), loss=loss / max(n, 1),
                      per_class=per_class, n=n)


def fit(
    model: nn.Module,
    train: TensorDataset,
    val: TensorDataset | None,
    config: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    hooks: TrainHooks | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    phase: str = "train",
) -> TrainResult:
    """Train ``model`` in place; with ``select_on_val`` restore the best-validation weights.

    Loss = CE (+ ``kd_weight`` x KD when a teacher is given) (+ hooks.extra_loss).
    Raises :class:`Cancelled` when ``should_stop()`` turns true (checked every step).
    """
    hooks = hooks or TrainHooks()
    dev = resolve_device(config.device)
    model.to(dev).train()
    if teacher is not None:
        teacher = teacher.to(dev).eval()
    groups = hooks.param_groups(model) if hooks.param_groups else [
        {"params": [p for p in model.parameters() if p.requires_grad]}]
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
            nesterov=config.momentum > 0)
    else:
        opt = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    x_all, y_all = train.tensors
    n = len(y_all)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total_steps = max(1, config.epochs * steps_per_epoch)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps)
             if config.schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(config.seed)
    best_acc, best_state = -1.0, None
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    step = 0
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        perm = torch.randperm(n, generator=gen)
        run_loss = 0.0
        for i in range(0, n, config.batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled("training cancelled")
            idx = perm[i : i + config.batch_size]
            x = x_all[idx]
            if augment is not None:
                x = augment(x, gen)
            x, y = x.to(dev, non_blocking=True), y_all[idx].to(dev, non_blocking=True)
            if hooks.on_step is not None:
                hooks.on_step(model, step)
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=config.label_smoothing)
            if teacher is not None and config.kd_weight > 0:
                with torch.no_grad():
                    t_out = teacher(x)
                loss = loss + config.kd_weight * kd_loss(out, t_out, config.kd_temperature)
            if hooks.extra_loss is not None:
                loss = loss + hooks.extra_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(
                    [p for g in opt.param_groups for p in g["params"]], config.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            run_loss += float(loss.detach())
            step += 1
        val_acc = evaluate(model, val, device=config.device).accuracy if val is not None else float("nan")
        rec = {"epoch": float(epoch), "loss": run_loss / steps_per_epoch, "val_accuracy": val_acc}
        history.append(rec)
        if progress is not None:
            progress({"phase": phase, "epoch": epoch, "epochs": config.epochs, **rec})
        if val is not None and config.select_on_val and val_acc > best_acc:
            best_acc = val_acc
            best_state = copy.deepcopy(model.state_dict())
        elif val is None or not config.select_on_val:
            best_acc = max(best_acc, val_acc if val_acc == val_acc else -1.0)
        if hooks.on_epoch_end is not None and hooks.on_epoch_end(model, epoch, val_acc):
            break
    if config.epochs == 0 and val is not None:
        best_acc = evaluate(model, val, device=config.device).accuracy
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_val_accuracy=best_acc, epochs_run=epoch,
                       seconds=time.perf_counter() - t0, history=history)
