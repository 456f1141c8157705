"""Typed training configuration."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Optimizer/schedule/distillation settings of one training run.

    ``kd_weight`` weights the distillation term ``T^2 * KL(teacher/T || student/T)``
    added to cross-entropy (SNL/AutoReP use T=4, weight 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    kd_temperature: float = Field(4.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)
    label_smoothing: float = 0.0
    grad_clip: float | None = 5.0
    select_on_val: bool = True
    device: str = "auto"
    seed: int = 0


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
