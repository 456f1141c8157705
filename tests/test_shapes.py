"""Tests of the generated ``shapes`` data set (pi_opt.data._shapes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pi_opt.activations import Kind
from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.data import DatasetSpec, dataset_fingerprint, load_dataset
from pi_opt.data._shapes import CLASS_NAMES, NUM_CLASSES, generate_split
from pi_opt.profile import profile_model
from pi_opt.sites import iter_sites, materialize_all, prepare_sites
from pi_opt.techniques import TechniqueContext
from pi_opt.techniques.base import baseline_candidate
from pi_opt.techniques.snl import SNL
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


# ------------------------------------------------------------------ needs non-linearity
# Small split (side 16, 1500 train) and a (8, 16, 32) resnet trained 8 epochs; the margins
# below leave room under the values measured on generator version 2 (test accuracy, nice 19,
# load ~5-8; the test runs seed 0 only, deterministically; seeds 1-3 show the spread):
#   seed 0: linear 0.116, 0 ReLUs 0.096, SNL 5 % 0.264, all ReLUs 0.414
#   seed 1: linear 0.102, 0 ReLUs 0.108, SNL 5 % 0.238, all ReLUs 0.322
#   seed 2: linear 0.108, 0 ReLUs 0.090, SNL 5 % 0.240, all ReLUs 0.362
#   seed 3: linear 0.116, 0 ReLUs 0.088, SNL 5 % 0.290, all ReLUs 0.388
# Re-measure with: PYTHONPATH=. python tests/test_shapes.py 0 1 2 3
SMALL = {"shapes_train": 1500, "shapes_val": 200, "shapes_test": 500}


def small_context(seed: int, workdir: Path) -> TechniqueContext:
    """Baseline (all-ReLU) trained from scratch on the small split, as a technique context."""
    data = load_dataset(_small(seed=seed, **SMALL))
    spec = ModelSpec(arch=ArchSpec(name="resnet", kwargs={"widths": [8, 16, 32]}),
                     input_shape=data.input_shape, num_classes=data.num_classes)
    torch.manual_seed(seed)
    model = prepare_sites(spec.build())
    materialize_all(model, data.train.tensors[0][:1])
    fit(model, data.train, data.val,
        TrainConfig(epochs=8, lr=0.05, batch_size=32, device="cpu", seed=seed),
        augment=data.augment)
    return TechniqueContext(
        spec=spec, data=data, teacher=model.eval(),
        baseline_profile=profile_model(model, spec.input_shape),
        finetune=TrainConfig(epochs=1, lr=0.01, device="cpu", seed=seed),
        workdir=workdir, seed=seed, job_seed=seed)


def front_accuracies(ctx: TechniqueContext) -> dict[str, float]:
    """Test accuracy of: the best linear map, the 0-ReLU network (every site IDENTITY,
    fine-tuned 1 epoch with KD), SNL at 5 % of the ReLUs, and the all-ReLU baseline."""
    test = ctx.data.test
    zero = baseline_candidate(ctx)
    for _, site in iter_sites(zero.model):
        site.set_kinds(torch.full_like(site.kinds, int(Kind.IDENTITY)))
    fit(zero.model, ctx.data.train, ctx.data.val, ctx.finetune, teacher=ctx.teacher,
        augment=ctx.data.augment)
    budget = ctx.baseline_profile.relus // 20
    snl = SNL(max_search_epochs=2).run(ctx, baseline_candidate(ctx), budget=budget)[0]
    assert snl.relus() <= budget and profile_model(zero.model, ctx.spec.input_shape).relus == 0
    return {"linear": _linear_test_accuracy(ctx.data),
            "zero_relu": evaluate(zero.model, test, device="cpu").accuracy,
            "snl_5pct": evaluate(snl.model, test, device="cpu").accuracy,
            "full": evaluate(ctx.teacher, test, device="cpu").accuracy}


@pytest.fixture(scope="module")
def accuracies(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    return front_accuracies(small_context(0, tmp_path_factory.mktemp("shapes")))


def test_not_linear_cnn_far_above_linear_classifier(accuracies: dict[str, float]) -> None:
    """The task must need non-linearity: the best linear classifier on raw pixels stays near
    chance while a small CNN trained briefly on the same split is far above it."""
    lin, cnn = accuracies["linear"], accuracies["full"]
    assert lin < 0.2, f"linear classifier reaches {lin:.3f}: the task became (nearly) linear"
    assert cnn > lin + 0.15, f"small CNN {cnn:.3f} is not far above linear {lin:.3f}"


def test_front_is_monotonic_in_relus(accuracies: dict[str, float]) -> None:
    """0 ReLUs << SNL at 5 % of the ReLUs < all ReLUs (fixed seed, measured margins)."""
    acc = accuracies
    assert acc["zero_relu"] < 0.2, acc
    assert acc["zero_relu"] + 0.08 < acc["snl_5pct"], acc
    assert acc["snl_5pct"] + 0.05 < acc["full"], acc


if __name__ == "__main__":  # re-measure the margins over seeds (one line of JSON per seed)
    import json
    import sys
    import tempfile

    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps({"seed": int(arg),
                              **front_accuracies(small_context(int(arg), Path(tmp)))}), flush=True)
