"""Deterministic, class-separable synthetic images for tests and smoke runs."""

from __future__ import annotations

import numpy as np

from pi_opt.data._raw import RawData

NOISE_STD = 0.5


def make_synthetic(
    samples: int, classes: int, shape: tuple[int, int, int], seed: int
) -> RawData:
    """``samples`` images ``x`` float32 ``[N, C, H, W]``: a fixed per-class random
    prototype (unit gaussian, smoothed by a 2x2 box filter) plus gaussian noise
    (std ``NOISE_STD``); balanced labels (``i % classes``, shuffled). Fully determined by
    the arguments; learnable by a tiny CNN in a few epochs.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    c, h, w = shape
    proto = rng.standard_normal((classes, c, h + 1, w + 1))
    proto = (
        proto[..., :-1, :-1] + proto[..., 1:, :-1] + proto[..., :-1, 1:] + proto[..., 1:, 1:]
    ) / 2.0
    y = np.arange(samples, dtype=np.int64) % classes
    rng.shuffle(y)
    x = proto[y] + NOISE_STD * rng.standard_normal((samples, c, h, w))
    return RawData(
        name="synthetic",
        x=x.astype(np.float32),
        y=y,
        class_names=[f"class_{i}" for i in range(classes)],
    )
