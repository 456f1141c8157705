"""Training, knowledge distillation and evaluation."""

from pi_opt.training._config import TrainConfig, resolve_device
from pi_opt.training._loops import (
    EvalResult, TrainHooks, TrainResult, evaluate, fit, kd_loss,
)

__all__ = [
    "EvalResult", "TrainConfig", "TrainHooks", "TrainResult", "evaluate", "fit", "kd_loss",
    "resolve_device",
]
