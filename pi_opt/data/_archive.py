"""Safe extraction of ``.zip`` / ``.tar`` / ``.tar.gz`` (``.tgz``, ``.tar.bz2``, ``.tar.xz``).

Every member is checked *before* anything is written: no absolute paths or drive letters,
no ``..`` components, only regular files and directories (no symlinks, hard links or
devices), at most ``max_members`` members and at most ``max_bytes`` uncompressed bytes.
Writing re-checks the byte count, so lying size headers cannot exceed the budget.
"""

from __future__ import annotations

import functools
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from pi_opt.errors import DatasetError

_BUF = 1 << 20


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    """Validated relative path components of member ``name``."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":"):
        raise DatasetError(
            f"{archive}: refusing member with absolute path {name!r}",
            path=str(archive),
            member=name,
        )
    parts = tuple(p for p in PurePosixPath(raw).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise DatasetError(
            f"{archive}: refusing member {name!r} that escapes the destination with '..'",
            path=str(archive),
            member=name,
        )
    if any("\x00" in p for p in parts):
        raise DatasetError(
            f"{archive}: refusing member {name!r} with a NUL byte", path=str(archive)
        )
    return parts


class _Budget:
    def __init__(self, archive: Path, max_bytes: int, max_members: int) -> None:
        self.archive, self.max_bytes, self.max_members = archive, max_bytes, max_members
        self.members = 0
        self.declared = 0
        self.written = 0

    def member(self, size: int) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise DatasetError(
                f"{self.archive}: more than {self.max_members} members; refusing to extract",
                path=str(self.archive),
            )
        self.declared += max(0, size)
        if self.declared > self.max_bytes:
            raise DatasetError(
                f"{self.archive}: uncompressed size exceeds the limit of {self.max_bytes} bytes "
                "(possible zip bomb); refusing to extract",
                path=str(self.archive),
            )

    def copy(self, src: IO[bytes], dst: IO[bytes]) -> None:
        while chunk := src.read(_BUF):
            self.written += len(chunk)
            if self.written > self.max_bytes:
                raise DatasetError(
                    f"{self.archive}: extracted data exceeds the limit of {self.max_bytes} bytes "
                    "(size headers lie); extraction aborted",
                    path=str(self.archive),
                )
            dst.write(chunk)


def _target(dest: Path, parts: tuple[str, ...], archive: Path) -> Path:
    target = dest.joinpath(*parts)
    # Guards against pre-existing symlinks inside dest redirecting the write.
    resolved = target.resolve()
    if resolved != dest and dest not in resolved.parents:
        raise DatasetError(
            f"{archive}: member {'/'.join(parts)!r} would be written outside {dest}",
            path=str(archive),
        )
    return target


def _write(
    dest: Path, items: list[tuple[tuple[str, ...], bool, Callable[[], IO[bytes]]]],
    budget: _Budget,
) -> None:
    for parts, is_dir, opener in items:
        if not parts:
            continue
        target = _target(dest, parts, budget.archive)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _target(dest, parts, budget.archive)  # re-check after creating parents
        with opener() as src, open(target, "wb") as dst:
            budget.copy(src, dst)


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{archive}: corrupt zip file ({exc})", path=str(archive)) from None
    with zf:
        items: list[tuple[tuple[str, ...], bool, Callable[[], IO[bytes]]]] = []
        for info in zf.infolist():
            budget.member(info.file_size)
            parts = _safe_parts(info.filename, archive)
            ftype = stat.S_IFMT((info.external_attr >> 16) & 0xFFFF)
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                kind = "symlink" if ftype == stat.S_IFLNK else "special file"
                raise DatasetError(
                    f"{archive}: refusing {kind} member {info.filename!r}", path=str(archive)
                )
            if info.flag_bits & 0x1:
                raise DatasetError(
                    f"{archive}: member {info.filename!r} is encrypted; unsupported",
                    path=str(archive),
                )
            items.append((parts, info.is_dir(), functools.partial(zf.open, info)))
        _write(dest, items, budget)


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    try:
        tf = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(
            f"{archive}: corrupt or unsupported tar file ({exc})", path=str(archive)
        ) from None
    with tf:
        items: list[tuple[tuple[str, ...], bool, Callable[[], IO[bytes]]]] = []
        try:
            for m in tf:
                budget.member(m.size if m.isfile() else 0)
                parts = _safe_parts(m.name, archive)
                if m.issym() or m.islnk():
                    raise DatasetError(
                        f"{archive}: refusing link member {m.name!r} -> {m.linkname!r}",
                        path=str(archive),
                    )
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(
                        f"{archive}: refusing special member {m.name!r} (device, fifo, ...)",
                        path=str(archive),
                    )

                def opener(m: tarfile.TarInfo = m) -> IO[bytes]:
                    f = tf.extractfile(m)
                    if f is None:  # pragma: no cover - regular files always have data
                        raise DatasetError(f"{archive}: cannot read member {m.name!r}")
                    return f

                items.append((parts, m.isdir(), opener))
            _write(dest, items, budget)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(f"{archive}: corrupt tar file ({exc})", path=str(archive)) from None


def extract_archive(
    archive: str | Path, dest: str | Path, *, max_bytes: int, max_members: int = 200_000
) -> Path:
    """Safely extract ``archive`` (zip or tar, maybe gz/bz2/xz) into ``dest``; returns ``dest``.

    Raises :class:`~pi_opt.errors.DatasetError` (naming the archive and member) for unsafe
    members, too many members, more than ``max_bytes`` uncompressed bytes or corrupt input.
    Nothing is written for archives rejected by the member scan; if the byte budget is
    exceeded while writing, the files written so far are removed (when ``dest`` was new).
    """
    src = Path(archive).expanduser()
    out = Path(dest).expanduser()
    if not src.is_file():
        raise DatasetError(f"archive {src} does not exist", path=str(src))
    if max_bytes <= 0 or max_members <= 0:
        raise ValueError("max_bytes and max_members must be positive")
    if zipfile.is_zipfile(src):
        extractor = _extract_zip
    elif tarfile.is_tarfile(src):
        extractor = _extract_tar
    else:
        raise DatasetError(
            f"{src}: not a .zip or .tar(.gz/.bz2/.xz) archive", path=str(src)
        )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    budget = _Budget(src, max_bytes, max_members)
    try:
        extractor(src, out, budget)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out
