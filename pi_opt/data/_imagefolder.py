"""Image folders: ``root/<class>/*.png|jpg`` or ``root/train/<class>/`` + ``root/test/<class>/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pi_opt.data._raw import RawData
from pi_opt.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def class_dirs(root: Path) -> list[Path]:
    """Sorted visible sub-directories of ``root``."""
    return sorted((d for d in root.iterdir() if d.is_dir() and _visible(d)), key=lambda d: d.name)


def _files(class_dir: Path) -> list[Path]:
    files: list[Path] = []
    for f in sorted(class_dir.iterdir(), key=lambda f: f.name):
        if not _visible(f):
            continue
        if f.is_dir():
            raise DatasetError(
                f"{f}: nested directory inside class folder {class_dir.name!r}; an image folder "
                "must be root/<class>/<image> (one level)",
                path=str(f),
            )
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(
                f"{f}: not an image file (accepted extensions: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}); remove it from the class folder",
                path=str(f),
            )
        files.append(f)
    if not files:
        raise DatasetError(f"class folder {class_dir} contains no images", path=str(class_dir))
    return files


def _scan(root: Path, classes: list[str] | None) -> tuple[list[str], list[Path], list[int]]:
    dirs = class_dirs(root)
    names = [d.name for d in dirs]
    if classes is None:
        if len(names) < 2:
            raise DatasetError(
                f"image folder {root} needs at least 2 class sub-folders, found {len(names)}",
                path=str(root),
            )
        classes = names
    else:
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DatasetError(
                f"{root} has class folder(s) {extra} that do not exist in the train folder",
                path=str(root),
            )
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    for d in dirs:
        for f in _files(d):
            paths.append(f)
            labels.append(index[d.name])
    return classes, paths, labels


def _decode(paths: list[Path], size: int, mode: str) -> np.ndarray:
    from PIL import Image

    c = 1 if mode == "L" else 3
    out = np.empty((len(paths), size, size, c), dtype=np.uint8)
    for i, f in enumerate(paths):
        try:
            with Image.open(f) as im:
                im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise DatasetError(
                f"{f}: cannot read image ({type(exc).__name__}: {exc})", path=str(f)
            ) from None
        out[i] = arr.reshape(size, size, c)
    return out.transpose(0, 3, 1, 2)


def _modes(paths: list[Path]) -> set[str]:
    from PIL import Image

    modes: set[str] = set()
    for f in paths:
        try:
            with Image.open(f) as im:
                modes.add(im.mode)
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(
                f"{f}: cannot read image ({type(exc).__name__}: {exc})", path=str(f)
            ) from None
    return modes


def load_imagefolder_raw(path: str | Path, size: int) -> RawData:
    """Decode all images to ``x`` uint8 ``[N, C, size, size]`` (C=1 if every image is
    grayscale, else RGB C=3), bilinear-resized with Pillow; classes = sorted folder names.
    ``root/test/`` (next to ``root/train/``) becomes the official test split.
    """
    try:
        import PIL  # noqa: F401
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise DatasetError("the imagefolder loader needs Pillow: pip install pillow") from None
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist or is not a directory", path=str(root)
        )
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir():
        classes, paths, labels = _scan(train_dir, None)
        t_paths: list[Path] = []
        t_labels: list[int] = []
        if test_dir.is_dir():
            _, t_paths, t_labels = _scan(test_dir, classes)
            if not t_paths:
                raise DatasetError(
                    f"{test_dir} contains no class folders; put test images in "
                    "test/<class>/ or remove the empty test folder",
                    path=str(test_dir),
                )
    else:
        if test_dir.is_dir():
            raise DatasetError(
                f"{root} has a 'test' folder but no 'train' folder", path=str(root)
            )
        classes, paths, labels = _scan(root, None)
        t_paths, t_labels = [], []
    modes = _modes(paths + t_paths)
    mode = "L" if modes <= _GRAY_MODES else "RGB"
    x = _decode(paths, size, mode)
    y = np.asarray(labels, dtype=np.int64)
    x_test = _decode(t_paths, size, mode) if t_paths else None
    y_test = np.asarray(t_labels, dtype=np.int64) if t_paths else None
    return RawData(
        name=f"imagefolder:{root.resolve().name}",
        x=x,
        y=y,
        class_names=classes,
        x_test=x_test,
        y_test=y_test,
        presized=True,
    )
