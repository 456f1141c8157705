"""Tests of pi_opt.data: loaders, splits, safety of pickles/npz/archives, augmentation."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import load_digits

from pi_opt.data import (
    Augment,
    DatasetSpec,
    dataset_fingerprint,
    detect_format,
    extract_archive,
    load_dataset,
    make_augment,
)
from pi_opt.data._splits import stratified_split
from pi_opt.errors import DatasetError, UnsafeFormatError


def _denorm(x: torch.Tensor, bundle) -> torch.Tensor:
    m = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    s = torch.tensor(bundle.std).view(1, -1, 1, 1)
    return x * s + m


# --------------------------------------------------------------------------- spec


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="path"):
        DatasetSpec(kind="cifar10")
    with pytest.raises(ValidationError, match="path"):
        DatasetSpec(kind="npz", path="  ")
    with pytest.raises(ValidationError, match="no 'path'"):
        DatasetSpec(kind="digits", path="/tmp/x")
    with pytest.raises(ValidationError):
        DatasetSpec(val_fraction=0.0)
    with pytest.raises(ValidationError):
        DatasetSpec(val_fraction=0.6)
    with pytest.raises(ValidationError):
        DatasetSpec(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        DatasetSpec(kind="synthetic", synthetic_samples=10, synthetic_classes=6)
    spec = DatasetSpec(kind="npz", path="/data/x.npz")
    with pytest.raises(ValidationError):
        spec.seed = 3  # type: ignore[misc]  # frozen
    assert DatasetSpec().kind == "digits"


# --------------------------------------------------------------------------- digits


def test_digits_sizes_partition_and_stats() -> None:
    b = load_dataset(DatasetSpec())
    assert b.name == "digits"
    assert b.sizes() == {"train": 1221, "val": 216, "test": 360}
    assert b.num_classes == 10 and b.class_names == [str(i) for i in range(10)]
    assert b.input_shape == (1, 8, 8)
    xs = [d.tensors[0] for d in (b.train, b.val, b.test)]
    ys = [d.tensors[1] for d in (b.train, b.val, b.test)]
    for x, y in zip(xs, ys):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and x.shape[0] == y.shape[0]
    # Normalized with train statistics: train mean ~0, std ~1; val/test not exactly.
    assert abs(float(xs[0].mean())) < 1e-5
    assert abs(float(xs[0].std(unbiased=False)) - 1.0) < 1e-4
    # mean/std are in raw units (pixel/16) and equal the raw train stats.
    raw_train = _denorm(xs[0], b)
    assert b.mean[0] == pytest.approx(float(raw_train.mean()), abs=1e-5)
    assert 0.25 < b.mean[0] < 0.36 and 0.3 < b.std[0] < 0.45
    # The three splits partition the data set exactly (multiset of (image, label)).
    d = load_digits()
    orig = sorted(
        (bytes(img.astype(np.uint8).ravel()), int(t)) for img, t in zip(d.images, d.target)
    )
    got = []
    for x, y in zip(xs, ys):
        px = torch.round(_denorm(x, b) * 16).to(torch.uint8).numpy()
        got += [(bytes(p.ravel()), int(t)) for p, t in zip(px, y)]
    assert sorted(got) == orig
    # Stratified: every class has ~20 % of its samples in the test split.
    counts = np.bincount(d.target, minlength=10)
    test_counts = np.bincount(ys[2].numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1.5)


def test_split_indices_disjoint_and_deterministic() -> None:
    y = np.repeat(np.arange(5), 20)
    keep, hold = stratified_split(y, 0.2, seed=7, what="test")
    assert len(hold) == 20 and len(keep) == 80
    assert set(keep).isdisjoint(hold) and set(keep) | set(hold) == set(range(100))
    assert np.array_equal(np.bincount(y[hold]), np.full(5, 4))
    k2, h2 = stratified_split(y, 0.2, seed=7, what="test")
    assert np.array_equal(keep, k2) and np.array_equal(hold, h2)
    _, h3 = stratified_split(y, 0.2, seed=8, what="test")
    assert not np.array_equal(hold, h3)
    # A singleton class cannot be stratified: falls back to a plain split, still valid.
    y1 = np.array([0, 0, 0, 1, 1, 1, 2])
    k, h = stratified_split(y1, 0.3, seed=0, what="test")
    assert len(k) + len(h) == 7 and set(k).isdisjoint(h)
    with pytest.raises(DatasetError, match="at least 2"):
        stratified_split(np.array([0]), 0.2, seed=0, what="test")


def test_digits_determinism_and_seed() -> None:
    a = load_dataset(DatasetSpec(seed=3))
    b = load_dataset(DatasetSpec(seed=3))
    c = load_dataset(DatasetSpec(seed=4))
    for split in ("train", "val", "test"):
        for i in range(2):
            assert torch.equal(getattr(a, split).tensors[i], getattr(b, split).tensors[i])
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])


def test_digits_max_train_and_resize() -> None:
    b = load_dataset(DatasetSpec(max_train=100, image_size=16, augment=False))
    assert len(b.train) == 100 and len(b.val) == 216 and len(b.test) == 360
    assert b.input_shape == (1, 16, 16)
    assert b.train.tensors[0].shape == (100, 1, 16, 16)
    assert np.array_equal(np.bincount(b.train.tensors[1].numpy(), minlength=10), np.full(10, 10))
    x = torch.randn(4, 1, 16, 16)
    assert b.augment(x) is x  # augment=False -> identity


# --------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_learnable() -> None:
    spec = DatasetSpec(kind="synthetic", synthetic_samples=400, synthetic_classes=4,
                       synthetic_shape=(2, 6, 6), seed=1)
    a, b = load_dataset(spec), load_dataset(spec)
    assert a.input_shape == (2, 6, 6) and a.num_classes == 4
    assert sum(a.sizes().values()) == 400
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert np.array_equal(np.bincount(a.test.tensors[1].numpy()), np.full(4, 20))
    other = load_dataset(spec.model_copy(update={"seed": 2}))
    assert not torch.equal(a.train.tensors[0][:5], other.train.tensors[0][:5])
    assert a.augment(a.train.tensors[0][:3]) is not None

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 36, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = a.train.tensors
    for _ in range(3):  # epochs
        for i in range(0, len(x), 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
    with torch.no_grad():
        acc = (model(a.test.tensors[0]).argmax(1) == a.test.tensors[1]).float().mean()
    assert acc > 0.9


# --------------------------------------------------------------------------- CIFAR


def _cifar_images(n: int, offset: int) -> np.ndarray:
    """uint8 [n, 3072] where pixel value encodes (sample, channel) for layout checks."""
    data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            data[i, c] = (offset + i * 3 + c) % 256
        data[i, 0, 0, 1] = 255  # a marker at row 0, col 1 of the red channel
    return data.reshape(n, 3072)


def _dump(obj: object, path: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


def _make_cifar10(root: Path, n_batches: int = 2, per_batch: int = 20, protocol: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for b in range(n_batches):
        _dump({b"batch_label": b"training batch", b"labels": [i % 10 for i in range(per_batch)],
               b"data": _cifar_images(per_batch, 100 * b), b"filenames": [b"x.png"] * per_batch},
              root / f"data_batch_{b + 1}", protocol)
    _dump({b"labels": [(i + 3) % 10 for i in range(10)], b"data": _cifar_images(10, 7)},
          root / "test_batch", protocol)
    _dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072},
          root / "batches.meta", protocol)
    return root


def _make_cifar100(root: Path, str_keys: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    k = (lambda s: s) if str_keys else (lambda s: s.encode())
    _dump({k("fine_labels"): [i % 100 for i in range(300)],
           k("coarse_labels"): [i % 20 for i in range(300)],
           k("data"): _cifar_images(300, 0)}, root / "train")
    _dump({k("fine_labels"): np.arange(100, dtype=np.int64)[::-1].copy(),
           k("data"): _cifar_images(100, 1)}, root / "test")
    _dump({k("fine_label_names"): [f"f{i}" for i in range(100)],
           k("coarse_label_names"): [f"g{i}" for i in range(20)]}, root / "meta")
    return root


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_loader(tmp_path: Path, protocol: int) -> None:
    root = _make_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)
    b = load_dataset(DatasetSpec(kind="cifar10", path=str(root)))
    assert b.name == "cifar10" and b.num_classes == 10
    assert b.class_names == [f"c{i}" for i in range(10)]
    assert b.input_shape == (3, 32, 32)
    assert b.sizes() == {"train": 34, "val": 6, "test": 10}
    # Official test split is test_batch, in order, with its labels and pixel layout.
    assert b.test.tensors[1].tolist() == [(i + 3) % 10 for i in range(10)]
    raw = _denorm(b.test.tensors[0], b)
    expected = torch.from_numpy(_cifar_images(10, 7).reshape(10, 3, 32, 32)).float() / 255
    assert torch.allclose(raw, expected, atol=1e-5)
    assert len(b.mean) == 3 and len(b.std) == 3
    assert isinstance(b.augmenter, Augment) and b.augmenter.pad == 4 and b.augmenter.flip
    # The parent directory containing cifar-10-batches-py works too.
    b2 = load_dataset(DatasetSpec(kind="cifar10", path=str(tmp_path)))
    assert torch.equal(b2.train.tensors[0], b.train.tensors[0])


def test_cifar100_loader(tmp_path: Path) -> None:
    for str_keys in (False, True):
        root = _make_cifar100(tmp_path / f"c100_{str_keys}", str_keys=str_keys)
        b = load_dataset(DatasetSpec(kind="cifar100", path=str(root), val_fraction=0.2))
        assert b.num_classes == 100 and b.class_names[:2] == ["f0", "f1"]
        assert b.sizes() == {"train": 240, "val": 60, "test": 100}
        assert b.test.tensors[1].tolist() == list(range(99, -1, -1))
        assert b.train.tensors[0].shape == (240, 3, 32, 32)


def test_cifar_validation_errors(tmp_path: Path) -> None:
    root = _make_cifar10(tmp_path / "c10", n_batches=1)
    _dump({b"labels": [0, 1, 2], b"data": _cifar_images(4, 0)}, root / "data_batch_1")
    with pytest.raises(DatasetError, match=r"data_batch_1.*3 labels for 4 images"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(root)))
    _dump({b"labels": [0, 12], b"data": _cifar_images(2, 0)}, root / "data_batch_1")
    with pytest.raises(DatasetError, match=r"labels must lie in 0\.\.9"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(root)))
    _dump({b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)}, root / "data_batch_1")
    with pytest.raises(DatasetError, match=r"shape \[N, 3072\]"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(root)))
    _dump({b"labels": [0, 1], b"data": np.zeros((2, 3072), np.float32)}, root / "data_batch_1")
    with pytest.raises(DatasetError, match="uint8"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(root)))
    (root / "data_batch_1").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(root)))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(tmp_path / "missing")))
    # A CIFAR-100 directory given as CIFAR-10 is reported as such.
    c100 = _make_cifar100(tmp_path / "c100")
    with pytest.raises(DatasetError, match="looks like CIFAR-100"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(c100)))


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload_cls", [_SystemPayload, _EvalPayload])
def test_malicious_cifar_pickle_refused(tmp_path: Path, payload_cls: type) -> None:
    root = _make_cifar10(tmp_path / "c10", n_batches=1)
    marker = tmp_path / "pwned"
    blob = pickle.dumps({b"data": payload_cls(marker), b"labels": [0]}, protocol=2)
    globals_used = [a for op, a, _ in pickletools.genops(blob) if op.name == "GLOBAL"]
    assert any(("system" in g) or ("eval" in g) for g in globals_used)
    (root / "data_batch_1").write_bytes(blob)
    with pytest.raises(UnsafeFormatError, match=r"data_batch_1.*refusing to unpickle global"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(root)))
    assert not marker.exists()
    # Sanity check that the payload is live: plain pickle *would* run it.
    if payload_cls is _EvalPayload:
        pickle.loads(blob)
        assert marker.read_text() == "pwned"


def test_malicious_meta_and_numpy_globals_refused(tmp_path: Path) -> None:
    root = _make_cifar10(tmp_path / "c10", n_batches=1)
    blob = pickle.dumps({b"label_names": np.load}, protocol=2)  # a numpy function, not allowed
    (root / "batches.meta").write_bytes(blob)
    with pytest.raises(UnsafeFormatError, match="numpy"):
        load_dataset(DatasetSpec(kind="cifar10", path=str(root)))


# --------------------------------------------------------------------------- ImageFolder


def _png(path: Path, rgb: tuple[int, int, int] | int, size=(12, 10), mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, rgb).save(path)


def _make_folder(root: Path, n: int = 6, colors=((255, 0, 0), (0, 0, 255)), mode="RGB") -> None:
    for ci, name in enumerate(("cat", "dog")):
        for i in range(n):
            _png(root / name / f"{i}.png", colors[ci], mode=mode)


def test_imagefolder_flat_layout(tmp_path: Path) -> None:
    _make_folder(tmp_path / "pets", n=10)
    b = load_dataset(DatasetSpec(kind="imagefolder", path=str(tmp_path / "pets"), image_size=8))
    assert b.name == "imagefolder:pets" and b.class_names == ["cat", "dog"]
    assert b.input_shape == (3, 8, 8) and sum(b.sizes().values()) == 20
    assert b.sizes()["test"] == 4
    x, y = b.train.tensors
    raw = _denorm(x, b)
    for xi, yi in zip(raw, y):  # cat = pure red, dog = pure blue
        red, blue = float(xi[0].mean()), float(xi[2].mean())
        assert (red, blue) == pytest.approx((1.0, 0.0) if yi == 0 else (0.0, 1.0), abs=1e-5)
    # Default image size is 32.
    b32 = load_dataset(DatasetSpec(kind="imagefolder", path=str(tmp_path / "pets")))
    assert b32.input_shape == (3, 32, 32)


def test_imagefolder_train_test_layout_and_grayscale(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_folder(root / "train", n=8, colors=(30, 200), mode="L")
    _make_folder(root / "test", n=3, colors=(30, 200), mode="L")
    b = load_dataset(DatasetSpec(kind="imagefolder", path=str(root), image_size=6))
    assert b.input_shape == (1, 6, 6)
    assert b.sizes() == {"train": 13, "val": 3, "test": 6}
    assert b.test.tensors[1].tolist() == [0, 0, 0, 1, 1, 1]
    raw = _denorm(b.test.tensors[0], b)
    assert float(raw[0].mean()) == pytest.approx(30 / 255, abs=1e-5)
    assert float(raw[-1].mean()) == pytest.approx(200 / 255, abs=1e-5)
    # A test class unknown to train is an error.
    _png(root / "test" / "bird" / "0.png", 5, mode="L")
    with pytest.raises(DatasetError, match="bird"):
        load_dataset(DatasetSpec(kind="imagefolder", path=str(root), image_size=6))


def test_imagefolder_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _make_folder(root, n=3)
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(DatasetSpec(kind="imagefolder", path=str(root), image_size=8))
    bad.unlink()
    (root / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="notes.txt"):
        load_dataset(DatasetSpec(kind="imagefolder", path=str(root), image_size=8))
    (root / "cat" / "notes.txt").unlink()
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(DatasetSpec(kind="imagefolder", path=str(root), image_size=8))


# --------------------------------------------------------------------------- npz


def test_npz_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    layouts = {
        "nhw": (rng.integers(0, 256, (40, 7, 9), dtype=np.uint8), (1, 7, 9)),
        "nchw": (rng.integers(0, 256, (40, 3, 7, 9), dtype=np.uint8), (3, 7, 9)),
        "nhwc": (rng.integers(0, 256, (40, 7, 9, 3), dtype=np.uint8), (3, 7, 9)),
    }
    for name, (x, shape) in layouts.items():
        p = tmp_path / f"{name}.npz"
        np.savez(p, x_train=x, y_train=y)
        b = load_dataset(DatasetSpec(kind="npz", path=str(p)))
        assert b.input_shape == shape, name
        assert b.num_classes == 4 and b.class_names == ["0", "1", "2", "3"]
        assert sum(b.sizes().values()) == 40 and b.sizes()["test"] == 8
        # uint8 is scaled to [0, 1]; the layout conversion preserves pixel positions.
        x_nchw = x[:, None] if x.ndim == 3 else (x.transpose(0, 3, 1, 2) if name == "nhwc" else x)
        allx = torch.cat([_denorm(d.tensors[0], b) for d in (b.train, b.val, b.test)])
        assert float(allx.max()) <= 1.0 + 1e-5
        ref = sorted(bytes(r.ravel()) for r in x_nchw)
        got = sorted(bytes(torch.round(r * 255).to(torch.uint8).numpy().ravel()) for r in allx)
        assert got == ref, name


def test_npz_official_test_and_class_names(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    x = np.random.default_rng(1).normal(size=(30, 2, 5, 5)).astype(np.float64)
    xt = np.ones((6, 2, 5, 5), np.float32)
    np.savez(p, x_train=x, y_train=np.arange(30) % 3, x_test=xt,
             y_test=np.array([0, 1, 2, 2, 1, 0]), class_names=np.array(["a", "b", "c"]))
    b = load_dataset(DatasetSpec(kind="npz", path=str(p), test_fraction=0.5))
    assert b.sizes()["test"] == 6 and b.sizes()["train"] + b.sizes()["val"] == 30
    assert b.class_names == ["a", "b", "c"] and b.name == "npz:d"
    assert b.test.tensors[1].tolist() == [0, 1, 2, 2, 1, 0]
    assert torch.allclose(_denorm(b.test.tensors[0], b), torch.ones(6, 2, 5, 5), atol=1e-5)


def test_npz_rejections(tmp_path: Path) -> None:
    def load(**arrays) -> None:
        p = tmp_path / "bad.npz"
        np.savez(p, **arrays)
        load_dataset(DatasetSpec(kind="npz", path=str(p)))

    x = np.zeros((10, 4, 4), np.uint8)
    y = np.arange(10) % 2
    obj = np.empty(10, dtype=object)
    obj[:] = [0, 1] * 5
    with pytest.raises(UnsafeFormatError, match=r"bad\.npz.*'y_train' is an object array"):
        load(x_train=x, y_train=obj)
    with pytest.raises(DatasetError, match="9 labels but the matching x array has 10"):
        load(x_train=x, y_train=y[:9])
    with pytest.raises(DatasetError, match="negative label"):
        load(x_train=x, y_train=y - 1)
    with pytest.raises(DatasetError, match="integer class labels"):
        load(x_train=x, y_train=y.astype(np.float32))
    with pytest.raises(DatasetError, match="out of range for 2 class_names"):
        load(x_train=x, y_train=y * 2, class_names=np.array(["a", "b"]))
    with pytest.raises(DatasetError, match="NaN"):
        load(x_train=np.full((10, 4, 4), np.nan, np.float32), y_train=y)
    with pytest.raises(DatasetError, match="missing required array 'y_train'"):
        load(x_train=x)
    with pytest.raises(DatasetError, match="given together"):
        load(x_train=x, y_train=y, x_test=x)
    with pytest.raises(DatasetError, match="unexpected array"):
        load(x_train=x, y_train=y, x_val=x)
    with pytest.raises(DatasetError, match="uint8"):
        load(x_train=x.astype(np.int32), y_train=y)
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="junk.npz"):
        load_dataset(DatasetSpec(kind="npz", path=str(tmp_path / "junk.npz")))


# --------------------------------------------------------------------------- archives


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file_info(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_extract_archive_ok(tmp_path: Path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("root/cls/a.txt", b"hello")
        zf.writestr("root/b.bin", b"\x00" * 100)
    out = extract_archive(z, tmp_path / "outz", max_bytes=1000)
    assert (out / "root" / "cls" / "a.txt").read_bytes() == b"hello"
    assert (out / "root" / "b.bin").stat().st_size == 100
    t = _tar_with(tmp_path / "a.tar.gz", [_file_info("d/x.txt", b"abc"), _file_info("./y", b"z")])
    out = extract_archive(t, tmp_path / "outt", max_bytes=1000)
    assert (out / "d" / "x.txt").read_bytes() == b"abc" and (out / "y").read_bytes() == b"z"


def test_extract_archive_refusals(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    # '..' traversal in a zip
    z = tmp_path / "trav.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(DatasetError, match=r"trav\.zip.*'\.\./evil\.txt'"):
        extract_archive(z, dest, max_bytes=10_000)
    assert not (tmp_path / "evil.txt").exists() and not dest.exists()
    # '..' traversal and absolute paths in a tar
    t = _tar_with(tmp_path / "trav.tar.gz", [_file_info("a/../../evil", b"x")])
    with pytest.raises(DatasetError, match=r"\.\."):
        extract_archive(t, dest, max_bytes=10_000)
    t = _tar_with(tmp_path / "abs.tar.gz", [_file_info("/tmp/evil_abs", b"x")])
    with pytest.raises(DatasetError, match="absolute"):
        extract_archive(t, dest, max_bytes=10_000)
    # symlink and hard link in a tar
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    t = _tar_with(tmp_path / "sym.tar.gz", [(link, None)])
    with pytest.raises(DatasetError, match="link member"):
        extract_archive(t, dest, max_bytes=10_000)
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "x"
    t = _tar_with(tmp_path / "hard.tar.gz", [_file_info("x", b"1"), (hard, None)])
    with pytest.raises(DatasetError, match="link member"):
        extract_archive(t, dest, max_bytes=10_000)
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    t = _tar_with(tmp_path / "dev.tar", [(dev, None)])
    with pytest.raises(DatasetError, match="special"):
        extract_archive(t, dest, max_bytes=10_000)
    # symlink in a zip (unix mode bits in external_attr)
    z = tmp_path / "sym.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symlink"):
        extract_archive(z, dest, max_bytes=10_000)
    # oversize (zip bomb guard): 1 MB of zeros compresses to ~1 KB
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\x00" * 1_000_000)
    assert z.stat().st_size < 10_000
    with pytest.raises(DatasetError, match="exceeds the limit of 100000 bytes"):
        extract_archive(z, dest, max_bytes=100_000)
    assert not dest.exists()
    # too many members
    t = _tar_with(tmp_path / "many.tar.gz", [_file_info(f"f{i}", b"") for i in range(5)])
    with pytest.raises(DatasetError, match="more than 3 members"):
        extract_archive(t, dest, max_bytes=10_000, max_members=3)
    # not an archive
    (tmp_path / "plain.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not a .zip or .tar"):
        extract_archive(tmp_path / "plain.txt", dest, max_bytes=10_000)


# --------------------------------------------------------------------------- detect_format


def test_detect_format(tmp_path: Path) -> None:
    _make_cifar10(tmp_path / "x" / "cifar-10-batches-py", n_batches=1)
    assert detect_format(tmp_path / "x") == "cifar10"
    assert detect_format(tmp_path / "x" / "cifar-10-batches-py") == "cifar10"
    assert detect_format(_make_cifar100(tmp_path / "c100")) == "cifar100"
    _make_folder(tmp_path / "flat", n=1)
    assert detect_format(tmp_path / "flat") == "imagefolder"
    _make_folder(tmp_path / "tt" / "train", n=1)
    assert detect_format(tmp_path / "tt") == "imagefolder"
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 3, 3)), y_train=np.array([0, 1]))
    assert detect_format(tmp_path / "d.npz") == "npz"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot detect"):
        detect_format(tmp_path / "empty")
    t = _tar_with(tmp_path / "a.tar.gz", [_file_info("x", b"1")])
    with pytest.raises(DatasetError, match="archive"):
        detect_format(t)
    with pytest.raises(DatasetError, match="does not exist"):
        detect_format(tmp_path / "nope")


# --------------------------------------------------------------------------- augment


def _crops(x: torch.Tensor, pad: int, mode: str) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode=mode)
    h, w = x.shape[-2:]
    offsets = range(2 * pad + 1)
    return [padded[..., i : i + h, j : j + w] for i in offsets for j in offsets]


def test_augment_digits_shift_no_flip() -> None:
    b = load_dataset(DatasetSpec())
    aug = b.augmenter
    assert aug == Augment(pad=1, flip=False, pad_mode="replicate")
    x = b.train.tensors[0][:64]
    out1 = b.augment(x, torch.Generator().manual_seed(5))
    out2 = b.augment(x, torch.Generator().manual_seed(5))
    out3 = b.augment(x, torch.Generator().manual_seed(6))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    moved = 0
    for xi, oi in zip(x, out1):
        cands = _crops(xi[None], 1, "replicate")
        assert any(torch.equal(oi[None], c) for c in cands)  # a pure 1-pixel shift
        moved += int(not torch.equal(oi, xi))
    assert moved > 32  # 8 of 9 offsets move the image


def test_augment_crop_flip_policy() -> None:
    aug = make_augment("cifar10", (3, 32, 32))
    assert aug == Augment(pad=4, flip=True, pad_mode="constant")
    assert make_augment("digits", (1, 8, 8), enabled=False).is_identity
    assert make_augment("synthetic", (1, 8, 8)).is_identity
    assert make_augment("npz", (1, 8, 8)).is_identity
    assert make_augment("npz", (3, 32, 32)) == Augment(pad=4, flip=False)
    x = torch.randn(40, 3, 32, 32)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    flipped = 0
    for xi, oi in zip(x, out):
        plain = any(torch.equal(oi, c) for c in _crops(xi, 4, "constant"))
        flip = any(torch.equal(oi, c) for c in _crops(xi.flip(-1), 4, "constant"))
        assert plain or flip
        flipped += int(flip and not plain)
    assert 5 < flipped < 35
    assert aug(x[:0]).shape == (0, 3, 32, 32)


# --------------------------------------------------------------------------- fingerprint


def test_dataset_fingerprint(tmp_path: Path) -> None:
    fp = dataset_fingerprint(DatasetSpec())
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == dataset_fingerprint(DatasetSpec())
    assert fp != dataset_fingerprint(DatasetSpec(seed=1))
    assert fp != dataset_fingerprint(DatasetSpec(augment=False))
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.zeros((4, 3, 3)), y_train=np.array([0, 1, 0, 1]))
    spec = DatasetSpec(kind="npz", path=str(p))
    f1 = dataset_fingerprint(spec)
    np.savez(p, x_train=np.zeros((5, 3, 3)), y_train=np.array([0, 1, 0, 1, 1]))
    assert dataset_fingerprint(spec) != f1
    root = _make_cifar10(tmp_path / "c10", n_batches=1)
    s10 = DatasetSpec(kind="cifar10", path=str(root))
    f2 = dataset_fingerprint(s10)
    _make_cifar10(root, n_batches=2)
    assert dataset_fingerprint(s10) != f2
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_fingerprint(DatasetSpec(kind="npz", path=str(tmp_path / "missing.npz")))
