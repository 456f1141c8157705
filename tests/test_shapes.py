"""Tests of the generated ``shapes`` data set (pi_opt.data._shapes)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pi_opt.data import DatasetSpec, dataset_fingerprint, load_dataset
from pi_opt.data._shapes import CLASS_NAMES, NUM_CLASSES, generate_split
from pi_opt.models import create_model
from pi_opt.training import TrainConfig, evaluate, fit


def _small(**kw: object) -> DatasetSpec:
    base: dict[str, object] = {
        "kind": "shapes", "shapes_train": 60, "shapes_val": 20, "shapes_test": 30,
        "image_size": 16,
    }
    base.update(kw)
    return DatasetSpec.model_validate(base)


def test_bundle_shapes_dtypes_and_balance() -> None:
    b = load_dataset(_small())
    assert b.name == "shapes"
    assert b.sizes() == {"train": 60, "val": 20, "test": 30}
    assert b.input_shape == (3, 16, 16) and b.num_classes == NUM_CLASSES == 10
    assert b.class_names == CLASS_NAMES
    for split in (b.train, b.val, b.test):
        x, y = split.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (3, 16, 16) and torch.isfinite(x).all()
        assert int(y.min()) >= 0 and int(y.max()) < 10
    # train mean/std normalization; balanced labels (6 per class in 60 samples)
    xt, yt = b.train.tensors
    assert abs(float(xt.mean())) < 0.05 and abs(float(xt.std()) - 1.0) < 0.05
    assert torch.bincount(yt, minlength=10).tolist() == [6] * 10
    batch = xt[:8]
    aug = b.augment(batch, torch.Generator().manual_seed(0))
    assert aug.shape == batch.shape and not torch.equal(aug, batch)
    assert load_dataset(_small(augment=False)).augment(batch) is batch


def test_default_size_is_32() -> None:
    b = load_dataset(_small(image_size=None))
    assert b.input_shape == (3, 32, 32)


def test_deterministic_by_seed_and_split_streams() -> None:
    x1, y1 = generate_split(3, "train", 50, 16)
    x2, y2 = generate_split(3, "train", 50, 16)
    assert x1.dtype == np.uint8 and x1.shape == (50, 3, 16, 16) and y1.dtype == np.int64
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    x3, _ = generate_split(4, "train", 50, 16)
    assert not np.array_equal(x1, x3)
    xv, _ = generate_split(3, "val", 50, 16)
    assert not np.array_equal(x1, xv)
    a, b = load_dataset(_small(seed=5)), load_dataset(_small(seed=5))
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert dataset_fingerprint(_small(seed=5)) != dataset_fingerprint(_small(seed=6))


def test_bad_sizes_are_config_errors() -> None:
    with pytest.raises(ValidationError, match="shapes_train must be at least 10"):
        _small(shapes_train=9)
    with pytest.raises(ValidationError, match="shapes_test must be at least 10"):
        _small(shapes_test=3)
    with pytest.raises(ValidationError, match="image_size for kind 'shapes' must be between 16"):
        _small(image_size=8)
    with pytest.raises(ValidationError, match="image_size"):
        _small(image_size=512)
    with pytest.raises(ValidationError, match="no 'path'"):
        _small(path="/tmp/x")
    with pytest.raises(ValueError, match="unknown split"):
        generate_split(0, "holdout", 10, 16)


def _linear_test_accuracy(bundle) -> float:  # type: ignore[no-untyped-def]
    """Ridge-regularised least squares onto one-hot labels: the best linear map, in closed form."""
    x, y = bundle.train.tensors
    xf = torch.cat([x.flatten(1), torch.ones(len(x), 1)], 1).double()
    target = torch.nn.functional.one_hot(y, 10).double()
    gram = xf.T @ xf + 10.0 * torch.eye(xf.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, xf.T @ target)
    xt, yt = bundle.test.tensors
    pred = (torch.cat([xt.flatten(1), torch.ones(len(xt), 1)], 1).double() @ w).argmax(1)
    return float((pred == yt).double().mean())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train on one thread: on a loaded 2-core machine two torch threads thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_not_linear_cnn_far_above_linear_classifier(one_thread: None) -> None:
    """The task must need non-linearity: the best linear classifier on raw pixels stays near
    chance while a small CNN trained briefly on the same split is far above it."""
    b = load_dataset(_small(shapes_train=1500, shapes_val=200, shapes_test=500, seed=0))
    lin = _linear_test_accuracy(b)
    torch.manual_seed(0)
    model = create_model("resnet", in_channels=3, num_classes=10, widths=(8, 16, 32))
    fit(model, b.train, b.val,
        TrainConfig(epochs=8, lr=0.05, batch_size=32, device="cpu", seed=0),
        augment=b.augment)
    cnn = evaluate(model, b.test, device="cpu").accuracy
    assert lin < 0.2, f"linear classifier reaches {lin:.3f}: the task became (nearly) linear"
    assert cnn > lin + 0.2, f"small CNN {cnn:.3f} is not far above linear {lin:.3f}"
