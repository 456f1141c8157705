"""Declarative description of a data set (:class:`DatasetSpec`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pi_opt.data._shapes import MAX_SIDE, MIN_SIDE, NUM_CLASSES

DatasetKind = Literal[
    "digits", "synthetic", "shapes", "cifar10", "cifar100", "imagefolder", "npz",
    "tinyimagenet",
]

#: Kinds read from the file system (``path`` is required).
FILE_KINDS: frozenset[str] = frozenset(
    {"cifar10", "cifar100", "imagefolder", "npz", "tinyimagenet"})
#: Kinds whose source ships an official test split.
OFFICIAL_TEST_KINDS: frozenset[str] = frozenset({"cifar10", "cifar100", "tinyimagenet"})
#: Kinds read file by file, which can be streamed instead of decoded into memory.
STREAMABLE_KINDS: frozenset[str] = frozenset({"imagefolder", "tinyimagenet"})
#: Image side used for ``imagefolder`` when ``image_size`` is not given.
DEFAULT_IMAGEFOLDER_SIZE = 32
#: Native image side of TinyImageNet.
TINYIMAGENET_SIZE = 64


class DatasetSpec(BaseModel):
    """Which data set to load and how to split / preprocess it.

    ``val_fraction`` is taken (stratified) from the training pool; ``test_fraction``
    only applies when the source has no official test split.

    ``kind="shapes"`` (:mod:`pi_opt.data._shapes`) is generated with fixed split sizes
    ``shapes_train`` / ``shapes_val`` / ``shapes_test`` (``val_fraction`` and ``test_fraction``
    do not apply; ``max_train`` still subsamples the train split) at side ``image_size``
    (default 32, between 16 and 128).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: DatasetKind = "digits"
    path: str | None = None
    val_fraction: float = Field(0.15, gt=0.0, le=0.5)
    test_fraction: float = Field(0.2, gt=0.0, le=0.5)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    image_size: int | None = Field(None, ge=2, le=1024)
    max_train: int | None = Field(None, ge=1)
    synthetic_samples: int = Field(600, ge=8, le=200_000)
    synthetic_classes: int = Field(4, ge=2, le=1000)
    synthetic_shape: tuple[int, int, int] = (1, 8, 8)
    augment: bool = True
    shapes_train: int = Field(5000, ge=1, le=500_000)
    shapes_val: int = Field(1000, ge=1, le=500_000)
    shapes_test: int = Field(2000, ge=1, le=500_000)
    #: Image folders / TinyImageNet: ``auto`` streams the files (decode per batch in
    #: DataLoader workers) when decoding them all into float32 memory would exceed
    #: ``pi_opt.data.STREAM_ABOVE_BYTES``; ``on`` / ``off`` force either.
    streaming: Literal["auto", "on", "off"] = "auto"

    @field_validator("synthetic_shape")
    @classmethod
    def _check_shape(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = v
        if not (1 <= c <= 16 and 2 <= h <= 256 and 2 <= w <= 256):
            raise ValueError(
                f"synthetic_shape must be (C, H, W) with 1 <= C <= 16 and 2 <= H, W <= 256, got {v}"
            )
        return v

    @model_validator(mode="after")
    def _check_path(self) -> DatasetSpec:
        if self.kind in FILE_KINDS:
            if self.path is None or not str(self.path).strip():
                raise ValueError(
                    f"dataset kind {self.kind!r} reads files: set 'path' to the "
                    + {
                        "cifar10": "'cifar-10-batches-py' directory",
                        "cifar100": "'cifar-100-python' directory",
                        "imagefolder": "image root (root/<class>/*.png or "
                        "root/train|test/<class>/)",
                        "npz": ".npz file with x_train/y_train",
                        "tinyimagenet": "'tiny-imagenet-200' directory (train/<wnid>/images/"
                        "*.JPEG, val/images + val/val_annotations.txt)",
                    }[self.kind]
                )
        elif self.path is not None:
            raise ValueError(f"dataset kind {self.kind!r} is built in and takes no 'path'")
        if self.kind == "synthetic" and self.synthetic_samples < 2 * self.synthetic_classes:
            raise ValueError(
                "synthetic_samples must be at least 2 * synthetic_classes "
                f"({self.synthetic_samples} < 2 * {self.synthetic_classes})"
            )
        if self.kind == "shapes":
            self._check_shapes()
        return self

    def _check_shapes(self) -> None:
        for name in ("shapes_train", "shapes_val", "shapes_test"):
            if getattr(self, name) < NUM_CLASSES:
                raise ValueError(
                    f"{name} must be at least {NUM_CLASSES} (one sample per class of the "
                    f"shapes set), got {getattr(self, name)}"
                )
        side = self.image_size
        if side is not None and not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(
                f"image_size for kind 'shapes' must be between {MIN_SIDE} and {MAX_SIDE} "
                f"(smaller sides cannot hold the shapes), got {side}"
            )
