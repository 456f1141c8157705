"""Per-epoch checkpoints of a running training, so a killed worker resumes mid-training.

One file ``<dir>/train_state.pt`` holds only our own state (tensors, numbers, strings:
model, optimizer, scheduler, grad scaler, RNG states (the run's and torch's global one),
the training hooks' own state, epoch, history, best weights, whether the run stopped) and
is loaded with ``torch.load(weights_only=True)`` — no arbitrary pickle is ever executed.
It is written atomically (temporary file + rename) at the end of every epoch and keyed by
the training configuration: a checkpoint of another configuration is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from pi_opt.training._config import TrainConfig

CHECKPOINT_NAME = "train_state.pt"
CHECKPOINT_VERSION = 2


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


class TrainingCheckpoints:
    """Checkpoint directories of the trainings one unit of work (a search trial) runs.

    Every training asks :meth:`next` for its directory, named by its phase and how many
    trainings of that phase came before it (``<root>/<phase>-<k>``). Work that is re-run
    after its worker died makes the same calls in the same order, so each training finds
    its own checkpoint: trainings that had finished are restored without training, the one
    that was cut short resumes at its last epoch. Work that depends on a training's result
    must be deterministic (same seeds) for this to hold; a checkpoint whose configuration
    does not match is ignored (:func:`load_checkpoint`). :meth:`clear` deletes them all.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._counts: dict[str, int] = {}

    def next(self, phase: str) -> Path:
        """The directory of the next training of ``phase`` (not created here)."""
        k = self._counts[phase] = self._counts.get(phase, 0) + 1
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in phase)
        return self.root / f"{safe}-{k}"

    def clear(self) -> None:
        """Delete every checkpoint under ``root`` (the work finished or failed for good)."""
        shutil.rmtree(self.root, ignore_errors=True)
