"""Per-key quotas: active jobs, stored upload bytes, artifact bytes.

Counts come from the tables (``uploads.stored_bytes``, ``jobs.artifact_bytes`` written
when a job ends), never from walking the disk on a request. Refusals are problem
documents naming the quota: 429 + ``Retry-After`` for active jobs (they finish), 413 for
upload storage and 422 for artifact storage (delete something first).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import ACTIVE, Job, Upload
from service.problems import ProblemError
from service.settings import Settings

RETRY_AFTER_S = "30"


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist; no symlinks)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
    return total


def check_job_quota(session: Session, settings: Settings, principal_id: str) -> None:
    """Before queueing a job: active jobs and artifact bytes of the key."""
    active = session.scalar(select(func.count()).select_from(Job).where(
        Job.principal_id == principal_id, Job.status.in_(ACTIVE))) or 0
    if active >= settings.quota_active_jobs:
        raise ProblemError(429, "quota-active-jobs", f"this key has {active} queued or running "
                           f"jobs; the limit is quota_active_jobs = {settings.quota_active_jobs}"
                           "; wait for one to finish or cancel one",
                           headers={"Retry-After": RETRY_AFTER_S}, limit="quota_active_jobs",
                           value=settings.quota_active_jobs)
    used = session.scalar(select(func.coalesce(func.sum(Job.artifact_bytes), 0)).where(
        Job.principal_id == principal_id)) or 0
    if used >= settings.quota_artifact_bytes:
        raise ProblemError(422, "quota-artifact-bytes", f"this key's job artifacts take {used} "
                           "bytes; the limit is quota_artifact_bytes = "
                           f"{settings.quota_artifact_bytes}; delete finished jobs first",
                           limit="quota_artifact_bytes", value=settings.quota_artifact_bytes)


def upload_bytes_used(session: Session, principal_id: str) -> int:
    """Bytes on disk of all uploads of ``principal_id``."""
    return int(session.scalar(select(func.coalesce(func.sum(Upload.stored_bytes), 0)).where(
        Upload.principal_id == principal_id)) or 0)


def check_upload_quota(settings: Settings, used: int, incoming: int) -> None:
    """413 when ``incoming`` more bytes would take the key past ``quota_upload_bytes``."""
    if used + incoming > settings.quota_upload_bytes:
        raise ProblemError(413, "quota-upload-bytes", f"this key stores {used} bytes of "
                           f"uploads; {incoming} more would pass quota_upload_bytes = "
                           f"{settings.quota_upload_bytes}; delete uploads first",
                           limit="quota_upload_bytes", value=settings.quota_upload_bytes)
