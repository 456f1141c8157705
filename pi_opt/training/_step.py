"""One optimizer step of :func:`~pi_opt.training.fit` (no host synchronisation)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pi_opt.training._config import TrainConfig
from pi_opt.training._precision import PrecisionPlan, maybe_compile


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton distillation: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean (fp32).

    ``student`` and ``teacher`` are logits ``[B, K]``; returns a scalar tensor.
    """
    t = temperature
    return F.kl_div(
        F.log_softmax(student.float() / t, dim=1), F.softmax(teacher.float() / t, dim=1),
        reduction="batchmean") * (t * t)


class Stepper:
    """Forward (autocast, optionally compiled), loss, backward (scaled for fp16), clip,
    optimizer and scheduler step. Loss sum and correct count are added to device tensors.

    When ``torch.compile`` is on, the first step of every new input shape (where compiling
    happens) runs guarded: if compiling fails (in the forward or the backward pass) the
    step is undone (gradients cleared, buffers such as BatchNorm statistics restored) and
    redone eagerly, with a warning; training stays eager from then on.
    """

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                 plan: PrecisionPlan, config: TrainConfig, *, teacher: nn.Module | None,
                 extra_loss: Callable[[nn.Module], Tensor] | None) -> None:
        self.model, self.opt, self.sched, self.plan, self.config = model, opt, sched, plan, config
        self.teacher = teacher if teacher is not None and config.kd_weight > 0 else None
        self.extra_loss = extra_loss
        self.forward: Callable[[Tensor], Tensor] = maybe_compile(model, config.compile)
        self.compiled = config.compile
        self.shapes: set[tuple[int, ...]] = set()
        self.params = [p for g in opt.param_groups for p in g["params"]]

    def step(self, x: Tensor, y: Tensor, loss_sum: Tensor, hits: Tensor) -> None:
        """One optimizer step on ``x`` ``[B, C, H, W]`` / ``y`` ``[B]``; adds the batch's summed
        loss and correct count to the device scalars ``loss_sum`` and ``hits``.
        """
        if self.compiled and tuple(x.shape) not in self.shapes:
            self.shapes.add(tuple(x.shape))
            buffers = {k: v.clone() for k, v in self.model.named_buffers()}
            try:
                self._backward(x, y, loss_sum, hits)
            except Exception as exc:  # noqa: BLE001 - inductor/dynamo raise many types
                warnings.warn(f"torch.compile failed ({type(exc).__name__}); training in eager "
                              "mode", RuntimeWarning, stacklevel=2)
                self.opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for k, v in self.model.named_buffers():
                        v.copy_(buffers[k])
                self.forward, self.compiled = self.model, False
            else:
                self._update()
                return
        self._backward(x, y, loss_sum, hits)
        self._update()

    def _backward(self, x: Tensor, y: Tensor, loss_sum: Tensor, hits: Tensor) -> None:
        cfg = self.config
        with self.plan.autocast():
            out = self.forward(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
            if self.teacher is not None:
                with torch.no_grad():
                    t_out = self.teacher(x)
                loss = loss + cfg.kd_weight * kd_loss(out, t_out, cfg.kd_temperature)
            if self.extra_loss is not None:
                loss = loss + self.extra_loss(self.model)
        self.opt.zero_grad(set_to_none=True)
        if self.plan.scaler is not None:
            self.plan.scaler.scale(loss).backward()
        else:
            loss.backward()
        loss_sum += loss.detach().float()
        hits += (out.detach().argmax(1) == y).sum()

    def _update(self) -> None:
        scaler = self.plan.scaler
        if self.config.grad_clip:
            if scaler is not None:
                scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.params, self.config.grad_clip, foreach=True)
        if scaler is not None:
            scaler.step(self.opt)
            scaler.update()
        else:
            self.opt.step()
        if self.sched is not None:
            self.sched.step()
