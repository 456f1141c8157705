"""Upload references of job specs, resolved against the uploads table.

Shared by ``service.jobs`` (which uploads a submission may use) and ``service.uploads``
(which active jobs still use an upload), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import ACTIVE, Job, Upload
from service.settings import Settings
from service.specs import UploadRef, referenced_uploads


def upload_refs(session: Session, settings: Settings, principal_id: str, ids: Sequence[str]
                ) -> dict[str, UploadRef]:
    """References resolvable by ``principal_id`` (unknown / foreign ids are left out)."""
    if not ids:
        return {}
    rows = session.scalars(select(Upload).where(Upload.id.in_(list(ids)),
                                                Upload.principal_id == principal_id))
    return {r.id: UploadRef(id=r.id, kind=r.kind, status=r.status, format=r.format,
                            path=settings.uploads_dir / r.path, meta=dict(r.meta or {}))
            for r in rows}


def uploads_in_use(session: Session, principal_id: str, upload_id: str) -> list[str]:
    """Active jobs of ``principal_id`` that reference ``upload_id``."""
    jobs = session.scalars(select(Job).where(Job.principal_id == principal_id,
                                             Job.status.in_(ACTIVE)))
    return [j.id for j in jobs if upload_id in referenced_uploads(j.spec)]
