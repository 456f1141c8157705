"""``load_dataset``, ``dataset_fingerprint`` and ``detect_format``."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import sklearn
import torch
from torch.utils.data import TensorDataset

from pi_opt.data._augment import make_augment
from pi_opt.data._bundle import DataBundle
from pi_opt.data._raw import RawData
from pi_opt.data._images import PixelSplit, decode_index
from pi_opt.data._spec import STREAMABLE_KINDS, DatasetSpec
from pi_opt.data._splits import (
    channel_stats,
    normalize_,
    resize,
    split_plan,
    to_float_tensor,
)
from pi_opt.data._streamed import image_side, scan_images, streamed_bundle, wants_streaming
from pi_opt.errors import DatasetError

#: Bumped whenever preprocessing changes, so cached baselines are invalidated.
DATA_FORMAT_VERSION = 1


def _read_raw(spec: DatasetSpec) -> RawData:
    if spec.kind == "digits":
        from pi_opt.data._digits import load_digits_raw

        return load_digits_raw()
    if spec.kind == "synthetic":
        from pi_opt.data._synthetic import make_synthetic

        return make_synthetic(
            spec.synthetic_samples, spec.synthetic_classes, spec.synthetic_shape, spec.seed
        )
    if spec.kind == "shapes":
        from pi_opt.data._shapes import DEFAULT_SIDE, shapes_raw

        return shapes_raw(
            spec.seed, spec.shapes_train, spec.shapes_val, spec.shapes_test,
            spec.image_size or DEFAULT_SIDE,
        )
    assert spec.path is not None  # guaranteed by DatasetSpec validation
    if spec.kind in ("cifar10", "cifar100"):
        from pi_opt.data._cifar import load_cifar_raw

        return load_cifar_raw(spec.path, spec.kind)
    if spec.kind == "npz":
        from pi_opt.data._npz import load_npz_raw

        return load_npz_raw(spec.path)
    raise DatasetError(f"unknown dataset kind {spec.kind!r}")  # pragma: no cover


def load_dataset(spec: DatasetSpec) -> DataBundle:
    """Load, split (deterministically by ``spec.seed``), resize and normalize a data set.

    Order: official test split or stratified ``test_fraction`` hold-out -> the source's
    fixed validation split or a stratified ``val_fraction`` of the remaining training pool -> optional stratified ``max_train``
    subsample -> optional bilinear resize to ``image_size`` -> per-channel mean/std from the
    train split applied to all splits. Raises :class:`~pi_opt.errors.DatasetError`.
    """
    if spec.kind in STREAMABLE_KINDS:
        index = scan_images(spec)
        if wants_streaming(spec, index):
            return streamed_bundle(index, spec)
        raw = decode_index(index, image_side(spec))
    else:
        raw = _read_raw(spec)
    k = len(raw.class_names)
    pool, hold, tr, va = split_plan(raw.y, raw.x_test is not None and raw.y_test is not None,
                                    spec, fixed_val=raw.y_val)
    if hold is None:
        x_pool, y_pool = raw.x, raw.y
        x_test_np, y_test_np = raw.x_test, raw.y_test
    else:
        x_pool, y_pool = raw.x[pool], raw.y[pool]
        x_test_np, y_test_np = raw.x[hold], raw.y[hold]
    if raw.x_val is not None and raw.y_val is not None:  # the source's fixed validation split
        x_pool = np.concatenate([x_pool, raw.x_val])
        y_pool = np.concatenate([y_pool, raw.y_val])
    assert x_test_np is not None and y_test_np is not None
    xs = [to_float_tensor(x_pool[tr]), to_float_tensor(x_pool[va]), to_float_tensor(x_test_np)]
    ys = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in
          (y_pool[tr], y_pool[va], y_test_np)]
    for y in ys:
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise DatasetError(f"{raw.name}: labels outside 0..{k - 1}")  # pragma: no cover
    if spec.image_size is not None and not raw.presized:
        xs = [resize(x, spec.image_size) for x in xs]
    mean, std = channel_stats(xs[0])
    for x in xs:
        normalize_(x, mean, std)
    c, h, w = xs[0].shape[1:]
    input_shape = (int(c), int(h), int(w))
    exact = raw.x.dtype == np.uint8 and (spec.image_size is None or raw.presized)
    splits = [PixelSplit(x, y, mean=mean, std=std) if exact else TensorDataset(x, y)
              for x, y in zip(xs, ys)]
    return DataBundle(
        name=raw.name,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=k,
        input_shape=input_shape,
        class_names=list(raw.class_names),
        mean=mean,
        std=std,
        augmenter=make_augment(spec.kind, input_shape, spec.augment),
    )


def _source_stats(path: Path) -> list[list[object]]:
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist", path=str(path))
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    rows: list[list[object]] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            f = Path(dirpath) / name
            st = f.stat()
            rows.append([f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return rows


def dataset_fingerprint(spec: DatasetSpec) -> str:
    """SHA-256 hex of the spec, the preprocessing version and the source files' stats
    (relative name, size, mtime; file contents are not read). For digits the
    scikit-learn version stands in for the source file.
    """
    payload: dict[str, object] = {
        "format": DATA_FORMAT_VERSION,
        "spec": spec.model_dump(mode="json"),
    }
    if spec.path is not None:
        src = Path(spec.path).expanduser().resolve()
        payload["source"] = {"path": str(src), "files": _source_stats(src)}
    elif spec.kind == "digits":
        payload["source"] = {"sklearn": sklearn.__version__}
    elif spec.kind == "shapes":
        from pi_opt.data._shapes import GENERATOR_VERSION

        payload["source"] = {"shapes_generator": GENERATOR_VERSION}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _has_images(d: Path) -> bool:
    from pi_opt.data._imagefolder import IMAGE_EXTENSIONS

    try:
        return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in d.iterdir() if f.is_file())
    except OSError:
        return False


def detect_format(path: str | Path) -> str:
    """Guess the data-set kind at ``path``: ``"cifar10"``, ``"cifar100"``, ``"imagefolder"``
    or ``"npz"``. Raises :class:`~pi_opt.errors.DatasetError` if none fits (archives must be
    extracted first with :func:`extract_archive`).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{p} does not exist", path=str(p))
    if p.is_file():
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
            if names and all(n.endswith(".npy") for n in names):
                return "npz"
        if p.suffix.lower() == ".npz":
            raise DatasetError(
                f"{p}: has a .npz suffix but is not a valid npz archive", path=str(p)
            )
        if zipfile.is_zipfile(p) or tarfile.is_tarfile(p):
            raise DatasetError(
                f"{p} is an archive; extract it first (pi_opt.data.extract_archive) and pass the "
                "extracted directory",
                path=str(p),
            )
        raise DatasetError(
            f"{p}: unrecognized data file (expected .npz or a directory)", path=str(p)
        )
    for sub, kind in (("cifar-10-batches-py", "cifar10"), ("cifar-100-python", "cifar100")):
        if (p / sub).is_dir():
            return kind
    if (p / "test_batch").is_file() and any(p.glob("data_batch_*")):
        return "cifar10"
    if (p / "train").is_file() and (p / "test").is_file() and (p / "meta").is_file():
        return "cifar100"
    base = p / "train" if (p / "train").is_dir() else p
    class_dirs = [d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if class_dirs and any(_has_images(d) for d in class_dirs):
        return "imagefolder"
    raise DatasetError(
        f"cannot detect the data set format of {p}: expected a CIFAR-10/100 'python version' "
        "directory, an image folder (root/<class>/*.png) or an .npz file",
        path=str(p),
    )
