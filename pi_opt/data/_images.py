"""Decoding image files: an index of paths and labels, parallel decode, streaming access.

An :class:`ImageIndex` lists the files of an image data set (image folder, TinyImageNet)
without decoding them. :func:`decode_index` decodes all of it in threads (Pillow releases
the GIL while decoding) into uint8 arrays; :class:`StreamingImages` decodes one image per
``__getitem__`` so a ``DataLoader`` with workers streams a folder that does not fit in
memory. A file that cannot be decoded raises :class:`DatasetError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from pi_opt.data._raw import RawData
from pi_opt.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass
class ImageIndex:
    """Files and labels of an image data set; ``mode`` is the Pillow mode to decode to
    (``L`` or ``RGB``); ``test_*`` is the official test split or ``None``."""

    name: str
    paths: list[Path]
    labels: list[int]
    class_names: list[str]
    test_paths: list[Path] | None = None
    test_labels: list[int] | None = None
    mode: str = "RGB"

    @property
    def channels(self) -> int:
        """Channels the images decode to: 1 for ``L``, 3 for ``RGB``."""
        return 1 if self.mode == "L" else 3

    def count(self) -> int:
        """Number of images, official test split included."""
        return len(self.paths) + len(self.test_paths or [])


def _bad_image(f: Path, exc: Exception) -> DatasetError:
    return DatasetError(f"{f}: cannot read image ({type(exc).__name__}: {exc})", path=str(f))


def decode_image(f: Path, size: int, mode: str) -> np.ndarray:
    """One image as uint8 ``[size, size, C]`` (bilinear resize). Raises DatasetError."""
    from PIL import Image

    try:
        with Image.open(f) as src:
            img = src.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise _bad_image(f, exc) from None
    return arr.reshape(size, size, 1 if mode == "L" else 3)


def _threads() -> int:
    return min(16, os.cpu_count() or 1)


def decode_all(paths: list[Path], size: int, mode: str) -> np.ndarray:
    """All ``paths`` as uint8 ``[N, C, size, size]``, decoded in parallel threads."""
    c = 1 if mode == "L" else 3
    out = np.empty((len(paths), size, size, c), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = decode_image(paths[i], size, mode)

    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(one, range(len(paths))))
    return out.transpose(0, 3, 1, 2)


def image_modes(paths: list[Path]) -> set[str]:
    """Pillow modes of ``paths`` (headers only, in parallel threads)."""
    from PIL import Image

    def mode(f: Path) -> str:
        try:
            with Image.open(f) as im:
                return str(im.mode)
        except Exception as exc:  # noqa: BLE001
            raise _bad_image(f, exc) from None

    with ThreadPoolExecutor(_threads()) as pool:
        return set(pool.map(mode, paths))


def decode_index(index: ImageIndex, size: int) -> RawData:
    """Decode every file of ``index`` (uint8, ``[N, C, size, size]``)."""
    try:
        import PIL  # noqa: F401
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise DatasetError("image data sets need Pillow: pip install pillow") from None
    test = index.test_paths
    return RawData(
        name=index.name, x=decode_all(index.paths, size, index.mode),
        y=np.asarray(index.labels, dtype=np.int64), class_names=list(index.class_names),
        x_test=decode_all(test, size, index.mode) if test else None,
        y_test=np.asarray(index.test_labels, dtype=np.int64) if test else None,
        presized=True)


class PixelSplit(TensorDataset):
    """A normalized split whose ``x`` is exactly ``(u8 / 255 - mean) / std`` per channel for
    uint8 pixels ``u8`` (the training engine may keep it on the device as uint8, 4x
    smaller, and normalize per batch with the same float32 arithmetic)."""

    def __init__(self, x: Tensor, y: Tensor, *, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__(x, y)
        self.pixel_mean = mean
        self.pixel_std = std


class LazyImages:
    """Tensor-like view of a :class:`StreamingImages`: ``len``, ``shape``, ``dtype`` and
    indexing by int / slice / index tensor, decoding (and normalizing) only what is asked.
    Whole-split tensor operations are not available on a streamed split."""

    def __init__(self, data: StreamingImages) -> None:
        self._data = data
        self.shape = torch.Size((len(data), data.channels, data.size, data.size))
        self.dtype = torch.float32

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, int):
            return self[[key]][0]
        idx = range(len(self))[key] if isinstance(key, slice) else [int(i) for i in key]
        items = [self._data.pixels(i) for i in idx]
        if not items:
            return torch.zeros((0, *self.shape[1:]))
        m = torch.tensor(self._data.pixel_mean).view(1, -1, 1, 1)
        s = torch.tensor(self._data.pixel_std).view(1, -1, 1, 1)
        return (torch.stack(items).float().div_(255.0) - m).div_(s)


class StreamingImages(Dataset[tuple[Tensor, int]]):
    """Images decoded on access: item ``i`` is ``(uint8 [C, size, size], label)``.

    ``pixel_mean`` / ``pixel_std`` (per channel, pixel values scaled to [0, 1]) are the
    normalization the training engine applies on the device. ``tensors`` gives a lazy
    ``(x, y)`` pair for code written against ``TensorDataset``.
    """

    def __init__(self, paths: list[Path], labels: list[int], *, size: int, mode: str,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.paths, self.labels, self.size, self.mode = paths, labels, size, mode
        self.channels = 1 if mode == "L" else 3
        self.pixel_mean, self.pixel_std = mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, i: int) -> Tensor:
        """Image ``i`` as uint8 ``[C, size, size]``."""
        arr = decode_image(self.paths[i], self.size, self.mode)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.pixels(i), int(self.labels[i])

    @property
    def tensors(self) -> tuple[LazyImages, Tensor]:
        """A lazy ``x`` (decoded on indexing) and the labels ``y`` ``[N]`` int64."""
        return LazyImages(self), torch.tensor(self.labels, dtype=torch.int64)

    def subset(self, indices: Sequence[int]) -> StreamingImages:
        """The images at ``indices`` (in that order, repeats allowed), still streamed."""
        return StreamingImages([self.paths[i] for i in indices],
                               [self.labels[i] for i in indices], size=self.size,
                               mode=self.mode, mean=self.pixel_mean, std=self.pixel_std)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of what this split reads, without decoding an image: every file's
        path, size and modification time (ns), the labels, decode size and mode and the
        normalization. Raises DatasetError naming a file that can no longer be read."""
        h = hashlib.sha256(json.dumps([self.size, self.mode, list(self.pixel_mean),
                                       list(self.pixel_std), list(self.labels)]).encode())
        for p in self.paths:
            try:
                st = os.stat(p)
            except OSError as exc:
                raise DatasetError(f"{p}: cannot read image file ({exc.strerror})") from exc
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
