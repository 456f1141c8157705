"""Intermediate, un-normalized form of a data set as read from its source."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RawData:
    """Arrays as read: ``x`` is ``[N, C, H, W]``, uint8 (pixel 0..255) or float32 (final units).

    ``y`` is int64 ``[N]`` in ``0 .. len(class_names) - 1``. ``x_test``/``y_test`` are the
    official test split, or ``None`` when the source has none. ``x_val``/``y_val`` are a
    fixed validation split (generated sets); ``None`` -> carved out of ``x``/``y``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    #: True when images already have the requested size (resized while decoding).
    presized: bool = False
