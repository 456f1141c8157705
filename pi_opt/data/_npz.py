"""NumPy ``.npz``: ``x_train``, ``y_train`` [+ ``x_test``, ``y_test``] [+ ``class_names``]."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pi_opt.data._raw import RawData
from pi_opt.errors import DatasetError, UnsafeFormatError

ALLOWED_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


def _to_nchw(x: np.ndarray, key: str, src: Path) -> np.ndarray:
    """[N,H,W] -> [N,1,H,W]; [N,H,W,C] (C in {1,3}, dim 1 not in {1,3}) -> [N,C,H,W]."""
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            return x.transpose(0, 3, 1, 2)
        return x
    raise DatasetError(
        f"{src}: '{key}' must be [N, H, W], [N, C, H, W] or [N, H, W, C], got shape {x.shape}",
        path=str(src),
    )


def _check_x(x: np.ndarray, key: str, src: Path) -> np.ndarray:
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DatasetError(f"{src}: '{key}' contains NaN or infinite values", path=str(src))
        x = x.astype(np.float32, copy=False)
    else:
        raise DatasetError(
            f"{src}: '{key}' must be uint8 (pixels 0..255) or floating point, got {x.dtype}",
            path=str(src),
        )
    x = _to_nchw(x, key, src)
    if x.shape[0] == 0 or min(x.shape[2:]) < 2:
        raise DatasetError(f"{src}: '{key}' has unusable shape {x.shape}", path=str(src))
    return np.ascontiguousarray(x)


def _check_y(y: np.ndarray, n: int, key: str, src: Path) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise DatasetError(
            f"{src}: '{key}' must hold integer class labels, got dtype {y.dtype}", path=str(src)
        )
    if y.ndim != 1:
        raise DatasetError(f"{src}: '{key}' must be 1-D [N], got shape {y.shape}", path=str(src))
    if y.shape[0] != n:
        raise DatasetError(
            f"{src}: '{key}' has {y.shape[0]} labels but the matching x array has {n} samples",
            path=str(src),
        )
    if y.min() < 0:
        raise DatasetError(f"{src}: '{key}' has negative label {int(y.min())}", path=str(src))
    return y.astype(np.int64)


def _read_arrays(src: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``src`` (no pickle); raises DatasetError /
    UnsafeFormatError for a missing, unreadable or unsafe file or an unknown key."""
    if not src.is_file():
        raise DatasetError(f"npz file {src} does not exist", path=str(src))
    try:
        npz = np.load(src, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{src}: not a readable .npz archive ({exc})", path=str(src)) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(
            f"{src}: is a single .npy array; expected an .npz archive with x_train/y_train "
            "(np.savez(path, x_train=..., y_train=...))",
            path=str(src),
        )
    arrays: dict[str, np.ndarray] = {}
    with npz:
        unknown = sorted(set(npz.files) - set(ALLOWED_KEYS))
        if unknown:
            raise DatasetError(
                f"{src}: unexpected array(s) {unknown}; allowed keys are {list(ALLOWED_KEYS)}",
                path=str(src),
            )
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                    raise UnsafeFormatError(
                        f"{src}: array '{key}' is an object array, which needs pickle to load; "
                        "store numeric arrays (and class_names as a str array) instead",
                        path=str(src),
                        key=key,
                    ) from None
                raise DatasetError(
                    f"{src}: cannot read array '{key}' ({exc})", path=str(src)
                ) from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise DatasetError(
                    f"{src}: cannot read array '{key}' ({exc})", path=str(src)
                ) from None
    return arrays


def _class_names(arrays: dict[str, np.ndarray], max_label: int, src: Path) -> list[str]:
    """The ``class_names`` array as str (checked against ``max_label``), else ``0..max_label``."""
    if "class_names" in arrays:
        cn = arrays["class_names"]
        if cn.ndim != 1 or not (cn.dtype.kind in "US"):
            raise DatasetError(
                f"{src}: 'class_names' must be a 1-D string array, got dtype {cn.dtype} "
                f"shape {cn.shape}",
                path=str(src),
            )
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in cn.tolist()]
        if max_label >= len(names):
            raise DatasetError(
                f"{src}: label {max_label} is out of range for {len(names)} class_names "
                f"(labels must be 0..{len(names) - 1})",
                path=str(src),
            )
    else:
        names = [str(i) for i in range(max_label + 1)]
    return names


def load_npz_raw(path: str | Path) -> RawData:
    """Read and validate an ``.npz`` (``allow_pickle=False``): ``x`` uint8 or float32
    ``[N, C, H, W]``, ``y`` int64 in ``0 .. K-1`` (``K = len(class_names)`` or max label + 1).
    """
    src = Path(path).expanduser()
    arrays = _read_arrays(src)
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DatasetError(
                f"{src}: missing required array '{key}' (found {sorted(arrays)})", path=str(src)
            )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetError(f"{src}: 'x_test' and 'y_test' must be given together", path=str(src))

    x = _check_x(arrays["x_train"], "x_train", src)
    y = _check_y(arrays["y_train"], x.shape[0], "y_train", src)
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _check_x(arrays["x_test"], "x_test", src)
        y_test = _check_y(arrays["y_test"], x_test.shape[0], "y_test", src)
        if x_test.shape[1:] != x.shape[1:]:
            raise DatasetError(
                f"{src}: x_test samples have shape {x_test.shape[1:]} but x_train samples "
                f"{x.shape[1:]} (after conversion to C, H, W)",
                path=str(src),
            )
        if x_test.dtype != x.dtype:
            raise DatasetError(
                f"{src}: x_train is {x.dtype} but x_test is {x_test.dtype}; use one scale",
                path=str(src),
            )
    max_label = int(max(y.max(), y_test.max() if y_test is not None else 0))
    names = _class_names(arrays, max_label, src)
    if len(names) < 2:
        raise DatasetError(f"{src}: need at least 2 classes, found {len(names)}", path=str(src))
    return RawData(
        name=f"npz:{src.stem}", x=x, y=y, class_names=names, x_test=x_test, y_test=y_test
    )
