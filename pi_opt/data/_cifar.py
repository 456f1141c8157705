"""CIFAR-10 / CIFAR-100 in the standard "python version" directory layout.

* CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5`` (any non-empty
  subset), ``test_batch``, ``batches.meta`` (``label_names``).
* CIFAR-100 (``cifar-100-python``): ``train``, ``test``, ``meta`` (``fine_label_names``);
  the fine labels are used.

Files are read with the restricted unpickler of :mod:`pi_opt.data._safe_pickle`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from pi_opt.data._raw import RawData
from pi_opt.data._safe_pickle import safe_load_pickle
from pi_opt.errors import DatasetError

CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
_SUBDIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_BATCH_RE = re.compile(r"^data_batch_(\d+)$")


def _key(d: dict[Any, Any], name: str) -> Any:
    """Look up ``name`` as bytes or str key; ``KeyError`` if absent."""
    if name.encode() in d:
        return d[name.encode()]
    return d[name]


def _as_str(v: Any) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)


def resolve_cifar_dir(path: str | Path, kind: str) -> Path:
    """The batch directory: ``path`` itself or its ``cifar-10-batches-py``/``cifar-100-python``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{kind} path {p} does not exist", path=str(p))
    if p.is_file():
        raise DatasetError(
            f"{kind} path {p} is a file; point it at the extracted '{_SUBDIR[kind]}' directory "
            "(archives can be unpacked with pi_opt.data.extract_archive)",
            path=str(p),
        )
    sub = p / _SUBDIR[kind]
    return sub if sub.is_dir() else p


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{path}: expected a dict batch, got {type(obj).__name__}", path=str(path)
        )
    try:
        data = _key(obj, "data")
    except KeyError:
        raise DatasetError(f"{path}: batch has no 'data' entry", path=str(path)) from None
    try:
        labels = _key(obj, label_key)
    except KeyError:
        raise DatasetError(f"{path}: batch has no '{label_key}' entry", path=str(path)) from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DatasetError(
            f"{path}: 'data' must be a uint8 numpy array, got "
            f"{getattr(data, 'dtype', type(data).__name__)}",
            path=str(path),
        )
    if data.ndim == 2 and data.shape[1] == 3072:
        data = data.reshape(-1, 3, 32, 32)
    elif not (data.ndim == 4 and data.shape[1:] == (3, 32, 32)):
        raise DatasetError(
            f"{path}: 'data' must have shape [N, 3072] (or [N, 3, 32, 32]), got {data.shape}",
            path=str(path),
        )
    try:
        y = np.asarray(labels)
    except Exception:  # noqa: BLE001 - anything odd in the label list
        raise DatasetError(
            f"{path}: '{label_key}' is not a list of integers", path=str(path)
        ) from None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{path}: '{label_key}' must be a flat list of integers, got dtype {y.dtype} "
            f"shape {y.shape}",
            path=str(path),
        )
    if y.shape[0] != data.shape[0]:
        raise DatasetError(
            f"{path}: {y.shape[0]} labels for {data.shape[0]} images (counts must match)",
            path=str(path),
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(
            f"{path}: labels must lie in 0..{num_classes - 1}, "
            f"found {int(y.min())}..{int(y.max())}",
            path=str(path),
        )
    return np.ascontiguousarray(data), y.astype(np.int64)


def _read_names(path: Path, key: str, expected: int, default: list[str]) -> list[str]:
    if not path.is_file():
        return default
    meta = safe_load_pickle(path)
    try:
        names = [_as_str(v) for v in _key(meta, key)] if isinstance(meta, dict) else None
    except (KeyError, TypeError):
        names = None
    if names is None:
        raise DatasetError(f"{path}: meta file has no '{key}' list", path=str(path))
    if len(names) != expected:
        raise DatasetError(
            f"{path}: '{key}' lists {len(names)} names, expected {expected}", path=str(path)
        )
    return names


def load_cifar_raw(path: str | Path, kind: str) -> RawData:
    """Read CIFAR-10/100: ``x`` uint8 ``[N, 3, 32, 32]``, ``y`` int64, official test split."""
    root = resolve_cifar_dir(path, kind)
    if kind == "cifar10":
        batches = sorted(
            (int(m.group(1)), f)
            for f in root.iterdir()
            if (m := _BATCH_RE.match(f.name)) and f.is_file()
        )
        test = root / "test_batch"
        looks_100 = (root / "meta").is_file()
        if not batches or not test.is_file():
            found = ", ".join(sorted(f.name for f in root.iterdir())[:10]) or "nothing"
            raise DatasetError(
                f"{root} is not a CIFAR-10 'python version' directory: need data_batch_1..5 and "
                f"test_batch (found: {found})"
                + ("; it looks like CIFAR-100, use kind 'cifar100'" if looks_100 else ""),
                path=str(root),
            )
        parts = [_read_batch(f, "labels", 10) for _, f in batches]
        x_test, y_test = _read_batch(test, "labels", 10)
        names = _read_names(root / "batches.meta", "label_names", 10, CIFAR10_NAMES)
    elif kind == "cifar100":
        train, test = root / "train", root / "test"
        looks_10 = (root / "test_batch").is_file()
        if not (train.is_file() and test.is_file()):
            found = ", ".join(sorted(f.name for f in root.iterdir())[:10]) or "nothing"
            raise DatasetError(
                f"{root} is not a CIFAR-100 'python version' directory: need files 'train', "
                f"'test' and 'meta' (found: {found})"
                + ("; it looks like CIFAR-10, use kind 'cifar10'" if looks_10 else ""),
                path=str(root),
            )
        parts = [_read_batch(train, "fine_labels", 100)]
        x_test, y_test = _read_batch(test, "fine_labels", 100)
        names = _read_names(root / "meta", "fine_label_names", 100, [str(i) for i in range(100)])
    else:  # pragma: no cover - guarded by the caller
        raise DatasetError(f"not a CIFAR kind: {kind!r}")
    x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return RawData(name=kind, x=x, y=y, class_names=names, x_test=x_test, y_test=y_test)
