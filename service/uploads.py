"""Uploads: raw request bodies streamed to disk with a size limit and a running SHA-256.

Data sets: ``.npz``, CIFAR python-batch archives and ImageFolder ``.zip``/``.tar.gz``,
checked cheaply here (magic bytes, member names, safe extraction, ``detect_format``) and
loaded for real only inside the job. Models are two steps: ``POST ?kind=model`` with the
safetensors weights (pickles / ``torch.save`` files are refused before anything is
kept), then ``PUT /v1/uploads/{id}/spec`` with the architecture spec (``ModelSpec``),
which is checked against the tensor names and shapes in the safetensors header.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import math
import re
import shutil
import tarfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from pi_opt.errors import DatasetError, ModelFormatError, ShapeMismatchError, UnsafeFormatError
from service.auth import Principal
from service.db import Database, Upload
from service.ids import new_id
from service.pagination import keyset_page
from service.isolation import Helpers
from service.problems import ProblemError, from_pi_opt
from service.refs import uploads_in_use
from service.usage import check_upload_quota, dir_bytes, upload_bytes_used
from service.schemas import UploadPublic
from service.settings import Settings
from service.specs import WEIGHTS_FILE, UploadRef, check_arch

_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_FLUSH = 1 << 20
_MAX_HEADER = 100 << 20
SPEC_FILE = "model.json"
LOCK_FILE = ".receiving"
NPZ_FILE = "data.npz"


def not_found(upload_id: str) -> ProblemError:
    """The 404 ``not-found`` problem for upload ``upload_id``."""
    return ProblemError(404, "not-found", f"upload {upload_id} not found")


def expected_sha256(headers: Mapping[str, str]) -> str | None:
    """Hex digest announced by ``X-Checksum-Sha256`` (hex or base64), ``Repr-Digest`` /
    ``Content-Digest`` (RFC 9530, ``sha-256=:b64:``) or ``Digest`` (RFC 3230)."""
    value = headers.get("x-checksum-sha256")
    if value:
        value = value.strip()
        if re.fullmatch(r"[0-9a-fA-F]{64}", value):
            return value.lower()
        return _b64_digest(value, "X-Checksum-Sha256")
    for name in ("repr-digest", "content-digest", "digest"):
        raw = headers.get(name)
        if not raw:
            continue
        for item in raw.split(","):
            algo, _, val = item.strip().partition("=")
            if algo.strip().lower() == "sha-256":
                return _b64_digest(val.strip().strip(":"), name)
    return None


def _b64_digest(value: str, header: str) -> str:
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise ProblemError(400, "invalid-checksum-header",
                           f"{header} must carry a SHA-256 digest (hex or base64)")
    return digest.hex()


# --------------------------------------------------------------------------- receive


async def _stream_to(request: Request, target: Path, limit: int, kind: str) -> tuple[int, str]:
    """Write the body to ``target``; 413 as soon as ``limit`` is crossed, 415 for pickles."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray()
    sniffed = False
    fh = await anyio.to_thread.run_sync(target.open, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ProblemError(413, "payload-too-large",
                                   f"upload exceeds {limit} bytes (max_upload_bytes, or what is "
                                   "left of the key's quota_upload_bytes)", value=limit)
            h.update(chunk)
            buf += chunk
            if not sniffed and (len(buf) >= 8 or not chunk):
                sniffed = True
                _refuse_unsafe(bytes(buf[:8]), kind)
            if len(buf) >= _FLUSH:
                data, buf = bytes(buf), bytearray()
                await anyio.to_thread.run_sync(fh.write, data)
        if not sniffed:
            _refuse_unsafe(bytes(buf[:8]), kind)
        if buf:
            await anyio.to_thread.run_sync(fh.write, bytes(buf))
    finally:
        await anyio.to_thread.run_sync(fh.close)
    return size, h.hexdigest()


def _refuse_unsafe(head: bytes, kind: str) -> None:
    pickle = head[:1] == b"\x80"
    torch_zip = kind == "model" and head[:4] == b"PK\x03\x04"
    if pickle or torch_zip:
        raise ProblemError(415, "unsafe-format",
                           "pickle / torch.save files are refused because loading them can run "
                           "code; send safetensors weights (safetensors.torch.save_file) or "
                           "npz data (numpy.savez)", title="Unsafe Format")


async def receive_upload(request: Request, db: Database, settings: Settings, helpers: Helpers,
                         principal: Principal, *, kind: str, filename: str) -> Upload:
    """Stream, verify and register one upload; nothing stays on disk on failure.

    The upload's folder is locked (``flock``) while it is received, so a crash leaves a
    folder without a row and without a lock holder: ``sweep_partial_uploads`` removes it.
    """
    if not _FILENAME.match(filename) or ".." in filename:
        raise ProblemError(422, "invalid-filename",
                           "filename must be 1-200 characters of [A-Za-z0-9._-]")
    with db.read() as s:
        used = upload_bytes_used(s, principal.id)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > settings.max_upload_bytes:
            raise ProblemError(413, "payload-too-large", "upload exceeds max_upload_bytes = "
                               f"{settings.max_upload_bytes}", limit="max_upload_bytes",
                               value=settings.max_upload_bytes)
        check_upload_quota(settings, used, int(declared))
    expected = expected_sha256(request.headers)
    upload_id = new_id("upl")
    folder = settings.uploads_dir / upload_id
    folder.mkdir(parents=True)
    lock = _lock_folder(folder)
    try:
        row = await _receive(request, db, settings, helpers, principal, folder,
                             kind=kind, filename=filename, expected=expected, used=used)
        return row
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, (DatasetError, ModelFormatError)):
            raise from_pi_opt(exc) from None
        raise
    finally:
        lock.close()
        (folder / LOCK_FILE).unlink(missing_ok=True)


async def _receive(request: Request, db: Database, settings: Settings, helpers: Helpers,
                   principal: Principal, folder: Path, *, kind: str, filename: str,
                   expected: str | None, used: int) -> Upload:
    raw = folder / "incoming.part"
    room = settings.quota_upload_bytes - used
    limit = min(settings.max_upload_bytes, room)
    size, digest = await _stream_to(request, raw, limit, kind)
    if size == 0:
        raise ProblemError(422, "empty-upload", "the request body is empty")
    if expected is not None and expected != digest:
        raise ProblemError(400, "checksum-mismatch",
                           f"body SHA-256 is {digest}, the header announced {expected}")
    if kind == "model":
        meta = await anyio.to_thread.run_sync(_inspect_weights, raw)
        raw.rename(folder / WEIGHTS_FILE)
        fmt, rel, status = "safetensors", folder.name, "awaiting_spec"
    else:
        max_extract = int(min(settings.max_extract_bytes, settings.max_extract_ratio * size,
                              max(room - size, 1)))
        fmt, rel, meta = await anyio.to_thread.run_sync(
            lambda: helpers.call(inspect_dataset, raw, folder, max_extract))
        status = "ready"
    stored = await anyio.to_thread.run_sync(dir_bytes, folder)
    check_upload_quota(settings, used, stored)
    row = Upload(id=folder.name, principal_id=principal.id, kind=kind, status=status,
                 format=fmt, filename=filename, size=size, sha256=digest, path=rel, meta=meta,
                 stored_bytes=stored)
    await anyio.to_thread.run_sync(_insert, db, row)
    return row


def _lock_folder(folder: Path) -> IO[bytes]:
    fh = (folder / LOCK_FILE).open("wb")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def sweep_partial_uploads(db: Database, settings: Settings, min_age_s: float = 2.0) -> list[str]:
    """Remove upload folders that have no row and no live receiver (a crash mid-upload);
    returns their names. Run at startup."""
    base = settings.uploads_dir
    if not base.is_dir():
        return []
    with db.read() as s:
        known = set(s.scalars(select(Upload.id)))
    removed: list[str] = []
    now = time.time()
    for folder in base.iterdir():
        if folder.name in known or not folder.is_dir() or folder.is_symlink():
            continue
        if now - folder.stat().st_mtime < min_age_s and not (folder / LOCK_FILE).exists():
            continue                        # just created by a live receiver, not locked yet
        try:
            lock = _lock_folder(folder) if (folder / LOCK_FILE).exists() else None
        except OSError:
            continue                        # a live receiver holds it
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
        finally:
            if lock is not None:
                lock.close()
    return removed


def _insert(db: Database, row: Upload) -> None:
    with db.write() as s:
        s.add(row)


def _inspect_weights(path: Path) -> dict[str, Any]:
    header = read_safetensors_header(path)
    shapes = [v["shape"] for v in header.values()]
    return {"tensors": len(header), "parameters": sum(math.prod(s) for s in shapes),
            "dtypes": sorted({v["dtype"] for v in header.values()})}


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor table of a safetensors file, checked for consistency (no tensor data read)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 2 <= n <= min(_MAX_HEADER, size - 8):
            raise ModelFormatError("not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFormatError("not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFormatError("not a safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    for name, t in header.items():
        ok = (isinstance(t, dict) and isinstance(t.get("dtype"), str)
              and isinstance(t.get("shape"), list) and all(isinstance(d, int) and d >= 0
                                                           for d in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and 0 <= t["data_offsets"][0] <= t["data_offsets"][1] <= data_len)
        if not ok:
            raise ModelFormatError(f"safetensors header entry {name!r} is malformed")
    if not header:
        raise ModelFormatError("the safetensors file holds no tensors")
    return header


def inspect_dataset(raw: Path, folder: Path, max_extract: int) -> tuple[str, str, dict[str, Any]]:
    """Helper-process entry: format check, safe extraction, ``detect_format``."""
    from pi_opt.data import detect_format, extract_archive

    rel_base = folder.name
    if zipfile.is_zipfile(raw):
        with zipfile.ZipFile(raw) as zf:
            names = zf.namelist()
        if any(n.endswith(".pkl") or n.endswith("/data.pkl") for n in names):
            raise UnsafeFormatError("this is a torch.save / pickle archive; data sets are "
                                    "accepted as .npz or image archives")
        if names and all(n.endswith(".npy") for n in names):
            keys = sorted(n[:-4] for n in names)
            if "x_train" not in keys or "y_train" not in keys:
                raise DatasetError(f"npz needs x_train and y_train arrays (found {keys})")
            target = folder / NPZ_FILE
            raw.rename(target)
            return "npz", f"{rel_base}/{NPZ_FILE}", {"arrays": keys, **_load_fully("npz", target)}
    elif not tarfile.is_tarfile(raw):
        raise ProblemError(415, "unsupported-format", "data sets are accepted as .npz, "
                           "CIFAR python-batch .tar.gz or ImageFolder .zip/.tar.gz",
                           title="Unsupported Media Type")
    try:
        root = extract_archive(raw, folder / "data", max_bytes=max_extract)
    except DatasetError as exc:
        if "exceeds the limit" in exc.message:
            raise ProblemError(413, "extraction-limit", "the archive extracts to more than "
                               f"{max_extract} bytes (max_extract_bytes, max_extract_ratio x "
                               "the upload size, or the key's remaining quota_upload_bytes)",
                               limit="max_extract_ratio", value=max_extract) from None
        raise
    raw.unlink()
    while True:
        try:
            fmt = detect_format(root)
            break
        except DatasetError:
            entries = [p for p in root.iterdir() if not p.name.startswith(".")]
            if len(entries) == 1 and entries[0].is_dir():
                root = entries[0]
                continue
            raise
    meta: dict[str, Any] = {}
    if fmt in ("cifar10", "cifar100"):
        meta = _load_fully(fmt, root)   # restricted unpickler: forbidden globals refused now
    return fmt, root.relative_to(folder.parent).as_posix(), meta


def _load_fully(kind: str, path: Path) -> dict[str, Any]:
    """Read the data set the way the job will (npz: ``allow_pickle=False``; CIFAR: the
    restricted unpickler), so unsafe or broken content is refused at upload time; returns
    its ``input_shape`` and ``num_classes``."""
    from pi_opt.data import DatasetSpec, load_dataset

    bundle = load_dataset(DatasetSpec.model_validate({"kind": kind, "path": str(path)}))
    return {"input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes}


# --------------------------------------------------------------------------- model spec


def set_model_spec(db: Database, settings: Settings, helpers: Helpers, principal: Principal,
                   upload_id: str, spec: dict[str, Any]) -> Upload:
    """Attach the architecture spec to a weights upload (validated against the header)."""
    with db.read() as s:
        row = _owned(s, principal, upload_id)
    if row.kind != "model":
        raise ProblemError(409, "not-a-model-upload", f"upload {upload_id} is a data set")
    folder = settings.uploads_dir / row.path
    doc = helpers.call(model_spec_doc, spec, folder / WEIGHTS_FILE, timeout=300)
    (folder / SPEC_FILE).write_text(json.dumps(doc, indent=2))
    with db.write() as s:
        row = _owned(s, principal, upload_id)
        row.status = "ready"
        row.meta = {**row.meta, "spec": doc}
    return row


def model_spec_doc(spec: dict[str, Any], weights: Path) -> dict[str, Any]:
    """Helper-process entry: validate a ``ModelSpec`` against the weights' header."""
    from pi_opt.artifacts import ModelSpec

    model_spec = ModelSpec.model_validate(spec)
    check_arch(model_spec.arch.name, model_spec.arch.kwargs, ("arch",))
    _check_weights_fit(model_spec, weights)
    return model_spec.model_dump(mode="json")


def _check_weights_fit(spec: Any, weights: Path) -> None:
    """Compare tensor names/shapes with the architecture built on the meta device."""
    import torch

    header = read_safetensors_header(weights)
    try:
        with torch.device("meta"):
            model = spec.build()
    except Exception as exc:  # noqa: BLE001 - any build failure is a spec problem
        raise ProblemError(422, "invalid-config", f"cannot build the architecture: {exc}") from None
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(header))
    unexpected = sorted(set(header) - set(own))
    if missing or unexpected:
        raise from_pi_opt(ModelFormatError(
            f"weights do not match the architecture: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"))
    bad = [k for k in own if own[k] != header[k]["shape"]]
    if bad:
        k = bad[0]
        raise from_pi_opt(ShapeMismatchError(
            f"shape mismatch for {k}: file has {tuple(header[k]['shape'])}, architecture "
            f"expects {tuple(own[k])} ({len(bad)} mismatched tensors)"))


# --------------------------------------------------------------------------- queries


def _owned(session: Session, principal: Principal, upload_id: str) -> Upload:
    row = session.get(Upload, upload_id)
    if row is None or row.principal_id != principal.id:
        raise not_found(upload_id)
    return row


def get_upload(db: Database, principal: Principal, upload_id: str) -> Upload:
    """Upload ``upload_id`` of ``principal``; raises ProblemError 404 ``not-found``."""
    with db.read() as s:
        return _owned(s, principal, upload_id)


def list_uploads(db: Database, principal: Principal, *, limit: int, cursor: str | None
                 ) -> tuple[list[Upload], str | None]:
    """One page (``limit`` rows) of the principal's uploads and the next cursor (or None)."""
    q = select(Upload).where(Upload.principal_id == principal.id)
    return keyset_page(db, q, Upload, limit=limit, cursor=cursor)


def delete_upload(db: Database, settings: Settings, principal: Principal, upload_id: str) -> None:
    """Delete an upload row and its files.

        Raises ProblemError 404 ``not-found``, 409 ``upload-in-use`` when an active job uses it.
    """
    with db.write() as s:
        row = _owned(s, principal, upload_id)
        users = uploads_in_use(s, principal.id, upload_id)
        if users:
            raise ProblemError(409, "upload-in-use",
                               f"upload {upload_id} is used by active job(s) {users}")
        s.delete(row)
    shutil.rmtree(settings.uploads_dir / upload_id, ignore_errors=True)


def to_public(row: Upload) -> UploadPublic:
    """API view of an upload row with its links (``spec`` for models)."""
    links = {"self": f"/v1/uploads/{row.id}"}
    if row.kind == "model":
        links["spec"] = f"/v1/uploads/{row.id}/spec"
    return UploadPublic(id=row.id, kind=row.kind, status=row.status,
                        format=row.format, filename=row.filename, size=row.size,
                        sha256=row.sha256, created_at=row.created_at, meta=row.meta or {},
                        links=links)
