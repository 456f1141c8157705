"""The loaded, split and normalized data set (:class:`DataBundle`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Generator, Tensor
from torch.utils.data import TensorDataset

from pi_opt.data._augment import Augment


@dataclass(frozen=True, eq=False)
class DataBundle:
    """Train/val/test splits of one data set.

    Each split is a ``TensorDataset(x, y)`` with ``x`` float32 ``[N, C, H, W]``
    normalized per channel with the *train* ``mean``/``std`` and ``y`` int64 ``[N]``
    in ``0 .. num_classes - 1``. ``mean``/``std`` are in pre-normalization units
    (pixel values scaled to [0, 1] for image sources).

    Image folders / TinyImageNet too large for memory (``DatasetSpec.streaming``) hold
    :class:`~pi_opt.data.StreamingImages` splits instead: files decoded on access, with a
    lazy ``tensors`` pair; :func:`pi_opt.training.fit` / ``evaluate`` stream them.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmenter: Augment = field(default_factory=Augment)

    def augment(self, x: Tensor, generator: Generator | None = None) -> Tensor:
        """Training augmentation of a normalized batch ``[B, C, H, W]`` (same shape back).

        Identity (returns ``x`` itself) when augmentation is disabled for this bundle.
        """
        return self.augmenter(x, generator)

    def sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
