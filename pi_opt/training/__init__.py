"""Training, knowledge distillation and evaluation."""

from pi_opt.training._checkpoint import TrainingCheckpoints
from pi_opt.training._config import TrainConfig, resolve_device
from pi_opt.training._loops import (
    EvalResult, TrainHooks, TrainResult, evaluate, fit, kd_loss, make_optimizer,
)
from pi_opt.training._plateau import Plateau
from pi_opt.training._precision import plan_precision

__all__ = [
    "EvalResult", "Plateau", "TrainConfig", "TrainHooks", "TrainResult", "TrainingCheckpoints", "evaluate",
    "fit", "kd_loss", "make_optimizer", "plan_precision", "resolve_device",
]
