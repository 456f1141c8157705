"""Training, distillation and evaluation loops (CPU or CUDA).

Training data is a ``TensorDataset(x [N,C,H,W] float32, y [N] int64)`` or a streaming
image data set (see :mod:`pi_opt.training._batches`); batches are drawn with seeded
generators so runs are reproducible on the same device. Inside an epoch nothing is read
back to the host: loss and accuracy are accumulated on the device and read once at the
epoch's end; hooks that need a host value run every ``config.sync_every`` steps.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pi_opt.errors import Cancelled
from pi_opt.training._batches import AugmentFn, Generators, eval_batches, make_batches
from pi_opt.training._checkpoint import config_key, load_checkpoint, save_checkpoint
from pi_opt.training._config import TrainConfig, resolve_device
from pi_opt.training._plateau import Plateau
from pi_opt.training._precision import plan_precision, to_memory_format, use_channels_last
from pi_opt.training._step import Stepper, kd_loss

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


@dataclass
class TrainHooks:
    """Optional technique hooks.

    extra_loss(model) -> scalar added to the loss each step (penalties).
    on_step(model, step) runs before each step's forward pass (gate updates); it must not
    read device values back to the host (that stalls the device every step).
    on_sync(model, step) runs before the forward pass of every ``config.sync_every``-th
    step: the place for host reads such as a live ReLU count.
    on_epoch_end(model, epoch, val_acc) -> True to stop early.
    param_groups(model) -> optimizer parameter groups (default: all trainable parameters).
    save_state() -> the hooks' own state (what lives outside the model and optimizer: mask
    parameters, a penalty weight, snapshots), written into ``fit``'s checkpoint after every
    epoch (after ``on_epoch_end``); ``load_state(state)`` puts it back on resume. Tensors,
    numbers, strings, lists, tuples and dicts only (the file is read with ``weights_only``).
    """

    extra_loss: Callable[[nn.Module], Tensor] | None = None
    on_step: Callable[[nn.Module, int], None] | None = None
    on_epoch_end: Callable[[nn.Module, int, float], bool | None] | None = None
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None
    on_sync: Callable[[nn.Module, int], None] | None = None
    save_state: Callable[[], dict[str, Any]] | None = None
    load_state: Callable[[dict[str, Any]], None] | None = None


@dataclass
class EvalResult:
    """One evaluation: accuracy (fraction), mean loss per sample, per-class accuracy
    (fractions, NaN for a class with no samples) and ``n`` samples counted."""

    accuracy: float
    loss: float
    per_class: list[float]
    n: int


@dataclass
class TrainResult:
    """One training run: best val accuracy (fraction), epochs run, wall seconds, and
    per-epoch history.
    """

    best_val_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    #: Epochs restored from a checkpoint instead of being trained in this call.
    resumed_epochs: int = 0


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Any, *, batch_size: int = 512, device: str = "auto",
    num_classes: int | None = None, precision: str = "fp32", channels_last: bool = False,
    workers: int | None = None,
) -> EvalResult:
    """Top-1 accuracy, mean CE loss and per-class accuracy (eval mode).

    ``data`` is a ``TensorDataset`` (``x`` ``[N, C, H, W]``, ``y`` ``[N]`` int64) or a
    streaming image data set, evaluated in batches of ``batch_size`` samples; counts are
    accumulated on the device and read once at the end. The model's train/eval mode is
    restored afterwards; it is left on the evaluation device.
    """
    dev = resolve_device(device)
    k = num_classes or _num_classes(data)
    plan = plan_precision(precision, dev)
    channels_last = channels_last and dev.type == "cuda"
    was = model.training
    model.eval().to(dev)
    correct = torch.zeros(k, device=dev)
    total = torch.zeros(k, device=dev)
    loss = torch.zeros((), device=dev, dtype=torch.float64)
    for x, y in eval_batches(data, dev, batch_size, workers):
        with plan.autocast():
            out = model(to_memory_format(x, channels_last)).float()
        loss += F.cross_entropy(out, y, reduction="sum").double()
        hit = (out.argmax(1) == y).float()
        correct.index_add_(0, y, hit)
        total.index_add_(0, y, torch.ones_like(hit))
    model.train(was)
    correct_c, total_c = correct.cpu(), total.cpu()
    n = int(total_c.sum())
    per_class = [float(c / t) if t > 0 else float("nan") for c, t in zip(correct_c, total_c)]
    return EvalResult(accuracy=float(correct_c.sum() / max(n, 1)), loss=float(loss) / max(n, 1),
                      per_class=per_class, n=n)


def _num_classes(data: Any) -> int:
    if hasattr(data, "tensors"):
        return int(data.tensors[1].max()) + 1
    return int(max(data.labels)) + 1


def make_optimizer(groups: list[dict[str, Any]], config: TrainConfig, dev: torch.device
                   ) -> torch.optim.Optimizer:
    """SGD (Nesterov when momentum > 0) or Adam with a multi-tensor step: ``fused`` on
    CUDA, ``foreach`` elsewhere."""
    cuda = dev.type == "cuda"  # fused kernels on CUDA, foreach elsewhere (None: torch default)
    fused, foreach = (True, None) if cuda else (None, True)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0,
                               foreach=foreach, fused=fused)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay,
                            foreach=foreach, fused=fused)


def fit(
    model: nn.Module,
    train: Any,
    val: Any | None,
    config: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    augment: AugmentFn | None = None,
    hooks: TrainHooks | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    phase: str = "train",
    checkpoint: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` in place; with ``select_on_val`` restore the best-validation weights.
    With ``config.patience`` the training stops on a validation plateau (:class:`Plateau`).

    Loss = CE (+ ``kd_weight`` x KD when a teacher is given) (+ hooks.extra_loss).
    With ``checkpoint`` (a directory) the run's state (with the hooks' ``save_state``) is
    saved after every epoch and a matching saved state is resumed from; a run that had
    finished or stopped early is restored without training.
    Raises :class:`Cancelled` when ``should_stop()`` turns true (checked every step).
    """
    hooks = hooks or TrainHooks()
    dev = resolve_device(config.device)
    model.to(dev).train()
    channels_last = use_channels_last(config.channels_last, dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stub lacks memory_format
    if teacher is not None:
        teacher = teacher.to(dev).eval()
    groups = hooks.param_groups(model) if hooks.param_groups else [
        {"params": [p for p in model.parameters() if p.requires_grad]}]
    opt = make_optimizer(groups, config, dev)
    batches = make_batches(train, dev, config.batch_size, config.data_on_device,
                           config.data_workers)
    steps_per_epoch = max(1, math.ceil(batches.n / config.batch_size))
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, max(1, config.epochs * steps_per_epoch)) if config.schedule == "cosine" else None)
    precision = plan_precision(config.precision, dev)
    run = _Run(model, opt, sched, Generators(config.seed, dev), config,
               config_key(config, batches.n, phase), checkpoint, hooks, precision.scaler)
    stepper = Stepper(model, opt, sched, precision, config,
                      teacher=teacher, extra_loss=hooks.extra_loss)
    t0 = time.perf_counter()
    for epoch in range(run.first_epoch(), config.epochs + 1):
        loss_sum = torch.zeros((), device=dev)
        hits = torch.zeros((), device=dev, dtype=torch.long)
        for x, y in batches.epoch(run.gens, augment):
            if should_stop is not None and should_stop():
                raise Cancelled("training cancelled")
            if hooks.on_sync is not None and run.step % config.sync_every == 0:
                hooks.on_sync(model, run.step)
            if hooks.on_step is not None:
                hooks.on_step(model, run.step)
            stepper.step(to_memory_format(x, channels_last), y, loss_sum, hits)
            run.step += 1
        val_acc = evaluate(model, val, device=config.device, precision=config.precision,
                           channels_last=channels_last, workers=config.data_workers).accuracy if val is not None \
            else float("nan")
        rec = {"epoch": float(epoch), "loss": float(loss_sum) / steps_per_epoch,
               "train_accuracy": float(hits) / max(1, batches.n), "val_accuracy": val_acc}
        run.end_epoch(epoch, rec, val is not None)
        if progress is not None:
            progress({"phase": phase, "epoch": epoch, "epochs": config.epochs, **rec})
        stop = hooks.on_epoch_end is not None and bool(hooks.on_epoch_end(model, epoch, val_acc))
        stop = run.plateau.update(val_acc) or stop
        run.save(epoch, stopped=stop)  # after the hook: its state changes are part of the epoch
        if stop:
            break
    return run.finish(val, t0)


class _Run:
    """Epoch bookkeeping of :func:`fit`: best weights, history, checkpoints, resume."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                 gens: Generators, config: TrainConfig, key: str,
                 checkpoint: str | Path | None, hooks: TrainHooks, scaler: Any) -> None:
        self.model, self.opt, self.sched, self.gens = model, opt, sched, gens
        self.config, self.key, self.checkpoint = config, key, checkpoint
        self.hooks, self.scaler = hooks, scaler
        self.best_acc = -1.0
        self.best_state: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []
        self.step = self.start_epoch = self.epoch = 0
        self.stopped = False
        self.plateau = Plateau(config.patience, config.min_delta)
        state = load_checkpoint(checkpoint, key)
        if state is not None:
            self._restore(state)

    def first_epoch(self) -> int:
        """The next epoch to train (past the last one when a restored run had stopped)."""
        return self.config.epochs + 1 if self.stopped else self.start_epoch + 1

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.gens.load(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.hooks.load_state is not None and state.get("hooks") is not None:
            self.hooks.load_state(state["hooks"])
        self.best_acc, self.best_state = state["best_acc"], state["best_state"]
        self.history = list(state["history"])
        self.plateau.replay(r["val_accuracy"] for r in self.history)
        self.step, self.start_epoch = state["step"], state["epoch"]
        self.epoch, self.stopped = self.start_epoch, bool(state.get("stopped", False))

    def end_epoch(self, epoch: int, rec: dict[str, float], has_val: bool) -> None:
        """Record an epoch: history, best accuracy and weights."""
        self.epoch = epoch
        self.history.append(rec)
        val_acc = rec["val_accuracy"]
        if has_val and self.config.select_on_val and val_acc > self.best_acc:
            self.best_acc = val_acc
            self.best_state = copy.deepcopy(self.model.state_dict())
        elif not has_val or not self.config.select_on_val:
            self.best_acc = max(self.best_acc, val_acc if val_acc == val_acc else -1.0)

    def save(self, epoch: int, *, stopped: bool) -> None:
        """Checkpoint the run after ``epoch`` (``stopped``: it ends here, before its last epoch)."""
        if self.checkpoint is None:
            return
        save_checkpoint(self.checkpoint, self.key, {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": self.gens.state(), "torch_rng": torch.get_rng_state(),
            "hooks": self.hooks.save_state() if self.hooks.save_state is not None else None,
            "best_acc": self.best_acc, "best_state": self.best_state, "history": self.history,
            "step": self.step, "epoch": epoch, "stopped": stopped})

    def finish(self, val: Any | None, t0: float) -> TrainResult:
        if self.config.epochs == 0 and val is not None:
            self.best_acc = evaluate(self.model, val, device=self.config.device).accuracy
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
        return TrainResult(best_val_accuracy=self.best_acc, epochs_run=self.epoch,
                           seconds=time.perf_counter() - t0, history=self.history,
                           resumed_epochs=self.start_epoch)
