"""The embedded default data set: scikit-learn's 8x8 handwritten digits (no download)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from pi_opt.data._raw import RawData


def load_digits_raw() -> RawData:
    """1797 images, ``x`` float32 ``[N, 1, 8, 8]`` in [0, 1] (pixel / 16), 10 classes "0".."9"."""
    d = load_digits()
    x = (np.asarray(d.images, dtype=np.float32) / 16.0)[:, None, :, :]
    y = np.asarray(d.target, dtype=np.int64)
    return RawData(name="digits", x=x, y=y, class_names=[str(i) for i in range(10)])
