"""Image folders: ``root/<class>/*.png|jpg`` or ``root/train/<class>/`` + ``root/test/<class>/``."""

from __future__ import annotations

from pathlib import Path

from pi_opt.data._images import (
    GRAY_MODES, IMAGE_EXTENSIONS, ImageIndex, decode_index, image_modes,
)
from pi_opt.data._raw import RawData
from pi_opt.errors import DatasetError

__all__ = ["IMAGE_EXTENSIONS", "class_dirs", "load_imagefolder_raw", "scan_imagefolder"]


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


def scan_imagefolder(path: str | Path) -> ImageIndex:
    """Index (no decoding) of ``root/<class>/*`` or ``root/train/<class>/`` (+ ``root/test/
    <class>/`` as the official test split); classes = sorted folder names. Image headers are
    read to pick the colour mode (``L`` if every image is grayscale, else ``RGB``).
    Raises :class:`DatasetError` naming the path and the expected layout.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist or is not a directory; expected "
            "root/<class>/<image> or root/train/<class>/<image>", path=str(root)
        )
    train_dir, test_dir = root / "train", root / "test"
    t_paths: list[Path] = []
    t_labels: list[int] = []
    if train_dir.is_dir():
        classes, paths, labels = _scan(train_dir, None)
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
    modes = image_modes(paths + t_paths)
    return ImageIndex(
        name=f"imagefolder:{root.resolve().name}", paths=paths, labels=labels,
        class_names=classes, test_paths=t_paths or None, test_labels=t_labels or None,
        mode="L" if modes <= GRAY_MODES else "RGB")


def load_imagefolder_raw(path: str | Path, size: int) -> RawData:
    """Decode all images to ``x`` uint8 ``[N, C, size, size]`` (C=1 if every image is
    grayscale, else RGB C=3), bilinear-resized with Pillow, in parallel threads;
    classes = sorted folder names. ``root/test/`` (next to ``root/train/``) becomes the
    official test split.
    """
    return decode_index(scan_imagefolder(path), size)
