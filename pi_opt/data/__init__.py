"""Data sets for pi_opt: loading, deterministic splits, normalization, augmentation.

All loaders return a :class:`DataBundle` whose splits hold ``x`` float32 ``[N, C, H, W]``
(normalized with the train split's per-channel mean/std) and ``y`` int64 ``[N]``.
Untrusted inputs are handled defensively: CIFAR pickles go through a restricted
unpickler, ``.npz`` files are loaded with ``allow_pickle=False`` and archives are
extracted with path, link and size checks.
"""

from __future__ import annotations

from pi_opt.data._archive import extract_archive
from pi_opt.data._augment import Augment, make_augment
from pi_opt.data._bundle import DataBundle
from pi_opt.data._images import PixelSplit, StreamingImages
from pi_opt.data._loader import (
    DATA_FORMAT_VERSION,
    dataset_fingerprint,
    detect_format,
    load_dataset,
)
from pi_opt.data._spec import DatasetKind, DatasetSpec
from pi_opt.data._streamed import STREAM_ABOVE_BYTES

__all__ = [
    "DATA_FORMAT_VERSION",
    "Augment",
    "DataBundle",
    "PixelSplit",
    "STREAM_ABOVE_BYTES",
    "StreamingImages",
    "DatasetKind",
    "DatasetSpec",
    "dataset_fingerprint",
    "detect_format",
    "extract_archive",
    "load_dataset",
    "make_augment",
]
