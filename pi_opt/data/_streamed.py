"""Image data sets that stay on disk: the streaming decision and the streamed bundle."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import TensorDataset

from pi_opt.data._augment import make_augment
from pi_opt.data._bundle import DataBundle
from pi_opt.data._images import ImageIndex, StreamingImages, decode_all
from pi_opt.data._spec import DEFAULT_IMAGEFOLDER_SIZE, TINYIMAGENET_SIZE, DatasetSpec
from pi_opt.data._splits import channel_stats, split_plan, to_float_tensor

#: ``streaming: auto`` streams when all images decoded as float32 would exceed this.
STREAM_ABOVE_BYTES = 2 * 1024**3
#: Training images decoded to estimate the normalization of a streamed data set.
STATS_SAMPLE = 2048


def image_side(spec: DatasetSpec) -> int:
    """Decoded image side: ``image_size``, else 64 for TinyImageNet and 32 for folders."""
    if spec.image_size is not None:
        return spec.image_size
    return TINYIMAGENET_SIZE if spec.kind == "tinyimagenet" else DEFAULT_IMAGEFOLDER_SIZE


def scan_images(spec: DatasetSpec) -> ImageIndex:
    """File index of an image folder or TinyImageNet ``spec`` (no decoding)."""
    assert spec.path is not None  # guaranteed by DatasetSpec validation
    if spec.kind == "tinyimagenet":
        from pi_opt.data._tinyimagenet import scan_tinyimagenet

        return scan_tinyimagenet(spec.path)
    from pi_opt.data._imagefolder import scan_imagefolder

    return scan_imagefolder(spec.path)


def decoded_bytes(index: ImageIndex, side: int) -> int:
    """Bytes of every image of ``index`` decoded as float32 ``[C, side, side]``."""
    return index.count() * index.channels * side * side * 4


def wants_streaming(spec: DatasetSpec, index: ImageIndex) -> bool:
    """``streaming: on/off`` forces it; ``auto`` streams above :data:`STREAM_ABOVE_BYTES`."""
    if spec.streaming != "auto":
        return spec.streaming == "on"
    return decoded_bytes(index, image_side(spec)) > STREAM_ABOVE_BYTES


def streamed_bundle(index: ImageIndex, spec: DatasetSpec) -> DataBundle:
    """A bundle whose splits are :class:`StreamingImages` (same split rules as in-memory
    loading). Mean/std come from up to :data:`STATS_SAMPLE` evenly spaced training images.
    """
    side = image_side(spec)
    paths = np.asarray(index.paths, dtype=object)
    labels = np.asarray(index.labels, dtype=np.int64)
    has_test = index.test_paths is not None and index.test_labels is not None
    pool, hold, tr, va = split_plan(labels, has_test, spec)
    if hold is None:
        test_p = list(index.test_paths or [])
        test_y = list(index.test_labels or [])
    else:
        test_p, test_y = list(paths[hold]), [int(v) for v in labels[hold]]
    pool_p, pool_y = paths[pool], labels[pool]
    pick = np.unique(np.linspace(0, len(tr) - 1, min(len(tr), STATS_SAMPLE)).round().astype(int))
    sample = to_float_tensor(decode_all(list(pool_p[tr[pick]]), side, index.mode))
    mean, std = channel_stats(sample)

    def split(p: list[Path], y: list[int]) -> TensorDataset:
        images = StreamingImages(list(p), [int(v) for v in y], size=side,
                                 mode=index.mode, mean=mean, std=std)
        return cast(TensorDataset, images)  # duck-typed split (lazy .tensors, see DataBundle)

    input_shape = (index.channels, side, side)
    return DataBundle(
        name=index.name, train=split(list(pool_p[tr]), list(pool_y[tr])),
        val=split(list(pool_p[va]), list(pool_y[va])),
        test=split(test_p, test_y),
        num_classes=len(index.class_names), input_shape=input_shape,
        class_names=list(index.class_names), mean=mean, std=std,
        augmenter=make_augment(spec.kind, input_shape, spec.augment))


__all__ = ["STREAM_ABOVE_BYTES", "decoded_bytes", "image_side", "scan_images",
           "streamed_bundle", "wants_streaming"]
