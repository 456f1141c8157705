"""Job artifacts: the files under ``report/``, ``points/`` and ``baseline/`` of a job directory.

Names are relative POSIX paths checked against a strict pattern and resolved inside the
job directory, so traversal (``..``, absolute paths, symlinks out) is impossible.
SHA-256 digests (also the ``ETag``) are cached per (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import threading
from collections import OrderedDict
from pathlib import Path

from service.problems import ProblemError
from service.schemas import ArtifactPublic

ROOTS = ("report", "points", "baseline")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_POINT = re.compile(r"^points/trial-(\d+)/")
_SKIP_SUFFIXES = (".tmp", ".lock", ".part")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".safetensors": "application/octet-stream",
    ".zip": "application/zip",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}

_cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_cache_lock = threading.Lock()


def media_type(name: str) -> str:
    """Media type of an artifact file name (known suffixes first, else ``mimetypes``)."""
    suffix = Path(name).suffix.lower()
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, cached by (path, size in bytes, mtime in ns)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _cache_lock:
        _cache[key] = digest
        while len(_cache) > 4096:
            _cache.popitem(last=False)
    return digest


def pareto_point(name: str) -> int | None:
    """Trial number ``n`` of an artifact under ``points/trial-<n>/``, else None."""
    m = _POINT.match(name)
    return int(m.group(1)) if m else None


def list_artifacts(job_dir: Path, job_id: str) -> list[ArtifactPublic]:
    """Every downloadable file of a job folder, sorted by name within each root.

        Symlinks, partial files and names outside the allowed pattern are skipped; sizes in bytes.
    """
    out: list[ArtifactPublic] = []
    for root in ROOTS:
        base = job_dir / root
        if not base.is_dir() or base.is_symlink():
            continue
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.is_symlink() or path.name.endswith(_SKIP_SUFFIXES):
                continue
            name = path.relative_to(job_dir).as_posix()
            if not _NAME.match(name):
                continue
            out.append(ArtifactPublic(name=name, media_type=media_type(name),
                                      size=path.stat().st_size, sha256=sha256_of(path),
                                      pareto_point=pareto_point(name),
                                      href=f"/v1/jobs/{job_id}/artifacts/{name}"))
    return out


def resolve_artifact(job_dir: Path, name: str) -> Path:
    """The file for ``name``, or a 404 problem (also for every traversal attempt)."""
    missing = ProblemError(404, "not-found", f"artifact {name!r} not found")
    if (len(name) > 500 or not _NAME.match(name) or name.split("/", 1)[0] not in ROOTS
            or any(p in ("..", ".") for p in name.split("/"))
            or name.endswith(_SKIP_SUFFIXES)):
        raise missing
    base = job_dir.resolve()
    path = (job_dir / name)
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise missing from None
    if base not in resolved.parents or not resolved.is_file() or path.is_symlink():
        raise missing
    return resolved
