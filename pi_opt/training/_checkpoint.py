"""Per-epoch checkpoints of a running training, so a killed worker resumes mid-training.

One file ``<dir>/train_state.pt`` holds only our own state (tensors, numbers, strings:
model, optimizer, scheduler, grad scaler, RNG states, epoch, history, best weights) and
is loaded with ``torch.load(weights_only=True)`` — no arbitrary pickle is ever executed.
It is written atomically (temporary file + rename) at the end of every epoch and keyed by
the training configuration: a checkpoint of another configuration is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from pi_opt.training._config import TrainConfig

CHECKPOINT_NAME = "train_state.pt"
CHECKPOINT_VERSION = 1


def config_key(config: TrainConfig, n_train: int, phase: str) -> str:
    """SHA-256 of what must match for a checkpoint to be resumable."""
    blob = json.dumps({"v": CHECKPOINT_VERSION, "config": config.model_dump(mode="json"),
                       "n": n_train, "phase": phase}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def save_checkpoint(directory: str | Path, key: str, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus ``key``) atomically to ``directory/train_state.pt``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = d / CHECKPOINT_NAME
    tmp = d / (CHECKPOINT_NAME + ".tmp")
    torch.save({"key": key, **state}, tmp)
    os.replace(tmp, final)
    return final


def load_checkpoint(directory: str | Path | None, key: str) -> dict[str, Any] | None:
    """The saved state when ``directory`` holds a checkpoint for ``key``, else ``None``
    (a mismatched or unreadable checkpoint is ignored with a warning)."""
    if directory is None:
        return None
    f = Path(directory) / CHECKPOINT_NAME
    if not f.is_file():
        return None
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt file
        warnings.warn(f"{f}: unreadable checkpoint ({type(exc).__name__}); starting from "
                      "epoch 0", RuntimeWarning, stacklevel=2)
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        warnings.warn(f"{f}: checkpoint of a different training configuration; starting "
                      "from epoch 0", RuntimeWarning, stacklevel=2)
        return None
    return state
