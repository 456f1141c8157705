"""Typed training configuration."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["fp32", "bf16", "fp16"]


class TrainConfig(BaseModel):
    """Optimizer/schedule/distillation settings of one training run.

    ``kd_weight`` weights the distillation term ``T^2 * KL(teacher/T || student/T)``
    added to cross-entropy (SNL/AutoReP use T=4, weight 1).

    Engine settings (results do not depend on them beyond floating-point rounding):

    * ``precision``: ``fp32``; ``bf16`` (autocast, falls back to fp32 with a warning on a
      device without bf16); ``fp16`` (autocast + a dynamic gradient scaler).
    * ``channels_last``: model and batches in NHWC memory format (faster convolutions
      with tensor cores).
    * ``compile``: ``torch.compile`` the model; falls back to eager with a warning where
      compilation cannot run (no compiler, unsupported hooks).
    * ``sync_every``: technique hooks that read a value back to the host (``TrainHooks
      .on_sync``, e.g. SNL's live ReLU count) run every this many steps; 1 = every step.
    * ``data_on_device``: ``auto`` keeps the training split resident on the device when a
      memory estimate says it fits (else batches are copied per step from pinned memory);
      ``always`` / ``never`` force either.
    * ``data_workers``: DataLoader worker processes decoding a streamed image data set
      (``None`` = one per CPU core but one, at most 8; 0 = decode in the training process).

    Early stopping: ``patience`` epochs in a row without a validation accuracy more than
    ``min_delta`` (fraction) above the best so far end the training (with
    ``select_on_val`` the best epoch's weights are kept); ``None`` trains every epoch.
    The cosine schedule keeps its full length (a stopped run ends at a higher rate).
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
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    sync_every: int = Field(1, ge=1, le=100_000)
    data_on_device: Literal["auto", "always", "never"] = "auto"
    data_workers: int | None = Field(None, ge=0, le=64)
    patience: int | None = Field(None, ge=1)
    min_delta: float = Field(0.0, ge=0, lt=1)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; any other name -> ``torch.device(name)``
    (RuntimeError for a name torch does not know)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
