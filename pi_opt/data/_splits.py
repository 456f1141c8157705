"""Deterministic stratified splitting, resizing and per-channel normalization."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import Tensor

from pi_opt.errors import DatasetError

_CHUNK = 4096


def _can_stratify(y: np.ndarray, n_hold: int) -> bool:
    if y.size == 0:
        return False
    counts = np.bincount(y)
    counts = counts[counts > 0]
    n_classes = counts.size
    return bool(counts.min() >= 2 and n_classes <= n_hold and n_classes <= y.size - n_hold)


def stratified_split(
    y: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..len(y)-1`` into ``(keep, held_out)``, ``held_out`` ~ ``fraction``.

    Stratified by label when every class has at least 2 samples and the held-out part
    can hold one per class; otherwise a plain seeded shuffle split. Both index arrays
    (int64) are sorted; the result depends only on ``y``, ``fraction`` and ``seed``.
    """
    n = int(y.shape[0])
    if n < 2:
        raise DatasetError(f"cannot carve a {what} split out of {n} sample(s); need at least 2")
    idx = np.arange(n, dtype=np.int64)
    n_hold = min(n - 1, max(1, int(np.ceil(fraction * n))))
    strat = y if _can_stratify(y, n_hold) else None
    keep, hold = train_test_split(idx, test_size=n_hold, random_state=seed, stratify=strat)
    return np.sort(keep), np.sort(hold)


def stratified_subsample(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a (stratified when possible) subsample of ``size`` of ``len(y)``."""
    n = int(y.shape[0])
    if size >= n:
        return np.arange(n, dtype=np.int64)
    idx = np.arange(n, dtype=np.int64)
    strat = y if _can_stratify(y, n - size) else None
    keep, _ = train_test_split(idx, train_size=size, random_state=seed, stratify=strat)
    return np.sort(keep)


def split_plan(y: np.ndarray, has_test: bool, spec: Any, *, fixed_val: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Split indices of a data set with labels ``y`` per ``spec`` (a ``DatasetSpec``).

    Returns ``(pool, hold, train, val)``: without an official test split (``has_test``
    false) ``hold`` is a stratified ``test_fraction`` hold-out and ``pool`` the rest (else
    ``pool`` is everything and ``hold`` is ``None``); ``train`` / ``val`` index into
    ``pool`` (stratified ``val_fraction``, then the optional ``max_train`` subsample).
    With ``fixed_val`` (the labels of a source's own validation split, appended by the
    caller after the pool) ``train`` is the whole pool and ``val`` the appended rows.
    """
    if has_test:
        pool, hold = np.arange(int(y.shape[0]), dtype=np.int64), None
    else:
        pool, hold = stratified_split(y, spec.test_fraction, spec.seed, "test")
    y_pool = y[pool]
    if fixed_val is not None:
        n = len(pool)
        tr = np.arange(n, dtype=np.int64)
        va = np.arange(n, n + len(fixed_val), dtype=np.int64)
    else:
        tr, va = stratified_split(y_pool, spec.val_fraction, spec.seed + 1, "validation")
    if spec.max_train is not None:
        tr = tr[stratified_subsample(y_pool[tr], spec.max_train, spec.seed + 2)]
    return pool, hold, tr, va


def to_float_tensor(x: np.ndarray) -> Tensor:
    """``uint8`` -> float32 / 255, floating -> float32 as-is (same shape)."""
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize ``[N, C, H, W]`` -> ``[N, C, size, size]`` (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < x.shape[-2] or size < x.shape[-1]
    parts = [
        F.interpolate(
            x[i : i + _CHUNK], size=(size, size), mode="bilinear", align_corners=False,
            antialias=shrink,
        )
        for i in range(0, x.shape[0], _CHUNK)
    ]
    return torch.cat(parts) if parts else x.new_zeros((0, x.shape[1], size, size))


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``[N, C, H, W]`` (float64 accumulation).

    A constant channel gets std 1.0 so normalization stays finite.
    """
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], _CHUNK):
        chunk = x[i : i + _CHUNK].to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise DatasetError("the training split is empty; cannot compute normalization statistics")
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std < 1e-8, torch.ones_like(std), std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def normalize_(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """In-place ``(x - mean) / std`` per channel; returns ``x``."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)
