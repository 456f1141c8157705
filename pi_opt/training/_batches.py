"""Where training batches come from: a resident tensor or a streaming loader.

Two kinds of training data reach :func:`~pi_opt.training.fit`:

* a ``TensorDataset(x [N, C, H, W] float32 normalized, y [N] int64)``: kept resident on
  the device when a memory estimate says it fits (as uint8 when the split says its
  values are exactly ``(u8 / 255 - mean) / std``: a ``pi_opt.data.PixelSplit``); batches are
  gathered, de-quantized and augmented on the device;
* a streaming data set (any ``Dataset`` with ``pixel_mean`` / ``pixel_std`` attributes
  whose items are ``(uint8 [C, H, W], int label)``): read through a ``DataLoader``
  with worker processes, pinned memory and prefetch; normalization and augmentation
  run on the device in batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

AugmentFn = Callable[[Tensor, torch.Generator], Tensor]

#: Fraction of free device memory a resident training split may take.
DEVICE_MEMORY_FRACTION = 0.5


class Generators:
    """Seeded random streams of a run: ``device`` (augmentation, on-device permutations)
    and ``host`` (permutations of host-resident data); one object on CPU runs."""

    def __init__(self, seed: int, dev: torch.device) -> None:
        self.host = torch.Generator().manual_seed(seed)
        self.device = (torch.Generator(device=dev).manual_seed(seed) if dev.type != "cpu"
                       else self.host)

    def on(self, dev: torch.device) -> torch.Generator:
        """The generator to draw on for tensors on ``dev`` (``host`` for CPU, else ``device``)."""
        return self.host if dev.type == "cpu" else self.device

    def state(self) -> dict[str, Tensor]:
        """Both generator states (``{"host", "device"}`` uint8 tensors) for a checkpoint."""
        return {"host": self.host.get_state(), "device": self.device.get_state()}

    def load(self, state: dict[str, Tensor]) -> None:
        """Restore the states saved by :meth:`state`."""
        self.host.set_state(state["host"])
        if self.device is not self.host:
            self.device.set_state(state["device"])


class Batches(Protocol):
    """One epoch of ``(x, y)`` device batches, normalized and (when asked) augmented."""

    n: int

    def epoch(self, gens: Generators, augment: AugmentFn | None) -> Iterator[
            tuple[Tensor, Tensor]]:
        """One shuffled pass: ``(x [B, C, H, W] float, y [B] int64)`` on the training device."""
        ...


def is_streaming(data: Any) -> bool:
    """True for a streaming image data set (not a ``TensorDataset``)."""
    return not isinstance(data, TensorDataset) and hasattr(data, "pixel_mean")


def _norm_consts(mean: tuple[float, ...], std: tuple[float, ...], dev: torch.device
                 ) -> tuple[Tensor, Tensor]:
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    return m, s


def normalize_pixels(u8: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 ``(u8 / 255 - mean) / std`` on ``u8``'s device."""
    return (u8.float().div_(255.0) - mean).div_(std)


def quantize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Inverse of :func:`normalize_pixels` for values that came from uint8 pixels."""
    m, s = _norm_consts(mean, std, x.device)
    return (x * s + m).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def fits_on_device(nbytes: int, dev: torch.device, mode: str) -> bool:
    """Resident-or-not decision: ``always``/``never`` force it; ``auto`` keeps data on a
    CUDA device when ``nbytes <= DEVICE_MEMORY_FRACTION x`` free memory (CPU: always)."""
    if mode != "auto":
        return mode == "always"
    if dev.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(dev)
    return nbytes <= DEVICE_MEMORY_FRACTION * free


class ResidentBatches:
    """Batches of a ``TensorDataset``; on the device when it fits, else gathered on the
    host and copied from pinned memory. Permutations draw from the generator of the data's
    device, augmentation from the one of the compute device."""

    def __init__(self, data: TensorDataset, dev: torch.device, batch_size: int,
                 mode: str) -> None:
        x, y = data.tensors[0], data.tensors[1]
        self.n, self.batch_size, self.dev = len(y), batch_size, dev
        mean, std = getattr(data, "pixel_mean", None), getattr(data, "pixel_std", None)
        self.u8 = dev.type == "cuda" and mean is not None and std is not None
        nbytes = (x.numel() if self.u8 else x.numel() * x.element_size()) + y.numel() * 8
        self.resident = fits_on_device(nbytes, dev, mode) or dev.type != "cuda"
        self.norm = _norm_consts(mean, std, dev) if self.u8 and mean and std else None
        if self.resident and dev.type == "cuda":
            self.x = quantize(x.to(dev), mean, std) if self.norm else x.to(dev)  # type: ignore[arg-type]
            self.y = y.to(dev)
        else:
            self.x, self.y, self.norm = x, y, None
        self.data_device = self.x.device

    def epoch(self, gens: Generators, augment: AugmentFn | None
              ) -> Iterator[tuple[Tensor, Tensor]]:
        """One shuffled pass over the resident split: ``(x [B, C, H, W] float, y [B] int64)`` on
        the training device, normalized and augmented; the last batch may be smaller.
        """
        gen = gens.on(self.dev)
        perm = torch.randperm(self.n, generator=gens.on(self.x.device), device=self.x.device)
        for i in range(0, self.n, self.batch_size):
            idx = perm[i : i + self.batch_size]
            x, y = self.x[idx], self.y[idx]
            if x.device != self.dev:
                x = x.pin_memory().to(self.dev, non_blocking=True)
                y = y.pin_memory().to(self.dev, non_blocking=True)
            if self.norm is not None:
                x = normalize_pixels(x, *self.norm)
            if augment is not None:
                x = augment(x, gen)
            yield x, y


def _stream_workers(requested: int | None) -> int:
    import os

    return requested if requested is not None else min(8, max(0, (os.cpu_count() or 1) - 1))


class StreamingBatches:
    """Batches of a streaming image data set through a ``DataLoader`` (workers, pinned
    memory, prefetch); uint8 batches are normalized and augmented on the device."""

    def __init__(self, data: Dataset[Any], dev: torch.device, batch_size: int,
                 workers: int | None = None) -> None:
        self.data, self.dev, self.batch_size = data, dev, batch_size
        self.n = len(data)  # type: ignore[arg-type]
        self.norm = _norm_consts(data.pixel_mean, data.pixel_std, dev)  # type: ignore[attr-defined]
        self.workers = _stream_workers(workers)

    def loader(self, sampler_gen: torch.Generator | None) -> DataLoader[Any]:
        """A ``DataLoader`` over the streamed split, shuffled when ``sampler_gen`` is given."""
        w = self.workers
        return DataLoader(
            self.data, batch_size=self.batch_size, shuffle=sampler_gen is not None,
            generator=sampler_gen, num_workers=w, pin_memory=self.dev.type == "cuda",
            prefetch_factor=4 if w > 0 else None, persistent_workers=False)

    def epoch(self, gens: Generators, augment: AugmentFn | None
              ) -> Iterator[tuple[Tensor, Tensor]]:
        """One shuffled pass decoded by the loader workers: ``(x [B, C, H, W] float, y [B])``
        moved to the training device, normalized and augmented there.
        """
        gen = gens.on(self.dev)
        seed = int(torch.randint(0, 2**62, (1,), generator=gens.host))
        for xb, yb in self.loader(torch.Generator().manual_seed(seed)):
            x = normalize_pixels(xb.to(self.dev, non_blocking=True), *self.norm)
            y = yb.to(self.dev, non_blocking=True)
            if augment is not None:
                x = augment(x, gen)
            yield x, y

    def ordered(self) -> Iterator[tuple[Tensor, Tensor]]:
        """All samples in order, normalized, no augmentation (evaluation)."""
        for xb, yb in self.loader(None):
            yield normalize_pixels(xb.to(self.dev, non_blocking=True), *self.norm), yb.to(
                self.dev, non_blocking=True)


def make_batches(data: Any, dev: torch.device, batch_size: int, mode: str,
                 workers: int | None = None) -> Batches:
    """:class:`StreamingBatches` for a streaming data set, else :class:`ResidentBatches`."""
    if is_streaming(data):
        return StreamingBatches(data, dev, batch_size, workers)
    return ResidentBatches(data, dev, batch_size, mode)


def eval_batches(data: Any, dev: torch.device, batch_size: int, workers: int | None = None
                 ) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` device batches in order without augmentation (any data kind)."""
    if is_streaming(data):
        yield from StreamingBatches(data, dev, batch_size, workers).ordered()
        return
    x_all, y_all = data.tensors[0], data.tensors[1]
    for i in range(0, len(y_all), batch_size):
        yield (x_all[i : i + batch_size].to(dev, non_blocking=True),
               y_all[i : i + batch_size].to(dev, non_blocking=True))
