"""TinyImageNet read in its own layout (no conversion step).

Expected layout (as distributed, ``tiny-imagenet-200/``)::

    ROOT/wnids.txt                       one WordNet id per line (optional)
    ROOT/words.txt                       "<wnid>\\t<names>" (optional: class names)
    ROOT/train/<wnid>/images/*.JPEG      500 images per class
    ROOT/val/images/*.JPEG
    ROOT/val/val_annotations.txt         "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>"

The labelled ``val`` split becomes the official test split (the ``test`` folder has no
labels and is ignored). Classes are the sorted wnids (the order of ``wnids.txt`` when it
is present is only checked, not used), so labels match a sorted image folder.
"""

from __future__ import annotations

from pathlib import Path

from pi_opt.data._images import IMAGE_EXTENSIONS, ImageIndex, decode_index
from pi_opt.data._raw import RawData
from pi_opt.errors import DatasetError

LAYOUT = ("ROOT/train/<wnid>/images/*.JPEG, ROOT/val/images/*.JPEG and "
          "ROOT/val/val_annotations.txt (optional ROOT/wnids.txt, ROOT/words.txt)")


def _fail(what: str, path: Path) -> DatasetError:
    return DatasetError(f"{path}: {what}; expected the TinyImageNet layout {LAYOUT}",
                        path=str(path))


def _images(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir()
                  if f.is_file() and not f.name.startswith(".")
                  and f.suffix.lower() in IMAGE_EXTENSIONS)


def _train(root: Path) -> tuple[list[str], list[Path], list[int]]:
    train = root / "train"
    if not train.is_dir():
        raise _fail("no 'train' folder", train)
    wnids = sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(wnids) < 2:
        raise _fail(f"needs at least 2 class folders, found {len(wnids)}", train)
    paths: list[Path] = []
    labels: list[int] = []
    for k, w in enumerate(wnids):
        img_dir = train / w / "images"
        if not img_dir.is_dir():
            raise _fail("missing 'images' folder", img_dir)
        files = _images(img_dir)
        if not files:
            raise _fail("contains no images", img_dir)
        paths += files
        labels += [k] * len(files)
    listed = root / "wnids.txt"
    if listed.is_file():
        want = sorted({ln.strip() for ln in listed.read_text().splitlines() if ln.strip()})
        if want != wnids:
            raise _fail(f"lists {len(want)} wnids that differ from the {len(wnids)} train "
                        "class folders", listed)
    return wnids, paths, labels


def _val(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    val = root / "val"
    ann, img_dir = val / "val_annotations.txt", val / "images"
    if not ann.is_file():
        raise _fail("missing", ann)
    if not img_dir.is_dir():
        raise _fail("missing", img_dir)
    index = {w: k for k, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    for n, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2 or cols[1] not in index:
            raise _fail(f"line {n} is not '<file>\\t<wnid of a train class>\\t...': "
                        f"{line[:80]!r}", ann)
        f = img_dir / cols[0]
        if not f.is_file():
            raise _fail(f"line {n} names {cols[0]!r}, which is not in {img_dir}", ann)
        paths.append(f)
        labels.append(index[cols[1]])
    if not paths:
        raise _fail("lists no images", ann)
    return paths, labels


def _names(root: Path, wnids: list[str]) -> list[str]:
    words = root / "words.txt"
    if not words.is_file():
        return list(wnids)
    table: dict[str, str] = {}
    for line in words.read_text(errors="replace").splitlines():
        wnid, _, names = line.partition("\t")
        if names.strip():
            table[wnid.strip()] = names.split(",")[0].strip()
    return [table.get(w, w) for w in wnids]


def scan_tinyimagenet(path: str | Path) -> ImageIndex:
    """Index the TinyImageNet folder at ``path`` (no decoding; images decode to RGB).
    Raises :class:`DatasetError` naming the offending path and the expected layout."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise _fail("does not exist or is not a directory", root)
    wnids, paths, labels = _train(root)
    t_paths, t_labels = _val(root, wnids)
    return ImageIndex(name=f"tinyimagenet:{root.resolve().name}", paths=paths, labels=labels,
                      class_names=_names(root, wnids), test_paths=t_paths,
                      test_labels=t_labels, mode="RGB")


def load_tinyimagenet_raw(path: str | Path, size: int) -> RawData:
    """Decode TinyImageNet (uint8 ``[N, 3, size, size]``; val = official test split)."""
    return decode_index(scan_tinyimagenet(path), size)
