"""Job service functions: submission (idempotent), queries, cancel, delete, events.

Status machine::

    queued ─► running ─► succeeded | failed | canceled
      │          ├─► cancelling ─► canceled (or succeeded/failed if it finished first)
      │          └─► queued (attempt + 1: runner crashed or its worker went silent)
      └─► canceled
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth import Principal
from service.bounds import JobLimits, check_nonfinite
from service.db import ACTIVE, TERMINAL, Database, IdempotencyKey, Job, JobEvent, utcnow
from service.executor.base import Executor
from service.ids import new_id
from service.pagination import keyset_page
from service.isolation import Helpers
from service.problems import ProblemError
from service.schemas import EventPublic, JobCreate, JobPublic, JobsPage, Progress
from service.settings import Settings
from service.specs import plan_and_check, referenced_uploads
from service.usage import check_job_quota
from service.refs import upload_refs


def not_found(job_id: str) -> ProblemError:
    """The 404 ``not-found`` problem for job ``job_id``."""
    return ProblemError(404, "not-found", f"job {job_id} not found")


# --------------------------------------------------------------------------- events


def append_event(session: Session, job_id: str, type_: str, data: dict[str, Any],
                 attempt: int) -> int:
    """Persist one event; the per-job ``seq`` comes from a row-locking counter update, so
    concurrent writers (several workers of one job) commit in ``seq`` order without gaps."""
    seq = session.execute(
        update(Job).where(Job.id == job_id).values(event_seq=Job.event_seq + 1)
        .returning(Job.event_seq)).scalar_one()
    session.add(JobEvent(job_id=job_id, seq=seq, attempt=attempt, type=type_, data=data))
    return int(seq)


def apply_progress(progress: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Fold a runner event into the job's ``progress`` (returns a new dict)."""
    out = dict(progress)
    kind = event.get("type")
    if kind == "phase":
        out["phase"] = event.get("phase")
    elif kind == "epoch":
        out["epoch"] = {k: event[k] for k in ("phase", "epoch", "epochs", "loss", "val_accuracy")
                        if k in event}
    elif kind == "trial":
        if isinstance(event.get("done"), int):
            out["trials_done"] = max(int(out.get("trials_done") or 0), event["done"])
        if isinstance(event.get("total"), int):
            out["trials_total"] = event["total"]
        if event.get("best") is not None:
            out["best_so_far"] = event["best"]
    return out


def record_events(session: Session, job: Job, events: Sequence[dict[str, Any]]) -> None:
    """Append runner events to the job's event log and fold them into its progress."""
    progress = job.progress or {}
    for ev in events:
        append_event(session, job.id, str(ev.get("type", "event"))[:32], ev, job.attempt)
        progress = apply_progress(progress, ev)
    job.progress = progress


def transition(session: Session, job: Job, status: str, *, reason: str | None = None,
               **data: Any) -> None:
    """Set ``status`` (and timestamps) and persist a ``status`` event."""
    now = utcnow()
    job.status = status
    job.updated_at = now
    if status == "running" and job.started_at is None:
        job.started_at = now
    if status in TERMINAL:
        job.finished_at = now
        job.runner_pid = None
    payload: dict[str, Any] = {"type": "status", "status": status, "attempt": job.attempt,
                               "terminal": status in TERMINAL, **data}
    if reason:
        payload["reason"] = reason
    append_event(session, job.id, "status", payload, job.attempt)


def recover_job(session: Session, job: Job, reason: str, *, max_recoveries: int,
                crash: bool = True) -> None:
    """The *server or worker* running ``job`` went away (crash, SIGKILL, shutdown): re-queue
    it with its attempt count unchanged (only runner failures use attempts). ``crash``
    counts a recovery; a job that keeps taking its server down fails after
    ``max_recoveries``."""
    job.worker = None
    job.runner_pid = None
    if job.status == "cancelling":
        transition(session, job, "canceled", reason=reason)
        return
    if crash:
        job.recoveries = (job.recoveries or 0) + 1
    if job.recoveries > max_recoveries:
        job.error = ProblemError(500, "recoveries-exhausted",
                                 f"gave up after {job.recoveries - 1} server crashes: {reason}",
                                 title="Job Failed").to_problem()
        transition(session, job, "failed", reason=reason)
    else:
        transition(session, job, "queued", reason=reason, counts=False)


def requeue_or_fail(session: Session, job: Job, reason: str) -> None:
    """A runner died: re-queue with attempt + 1, or fail after ``max_attempts``."""
    if job.status == "cancelling":
        transition(session, job, "canceled", reason=reason)
    elif job.attempt >= job.max_attempts:
        job.error = ProblemError(500, "attempts-exhausted",
                                 f"gave up after {job.attempt} attempts: {reason}",
                                 title="Job Failed").to_problem()
        transition(session, job, "failed", reason=reason)
    else:
        job.attempt += 1
        job.worker = None
        job.runner_pid = None
        transition(session, job, "queued", reason=reason)


# --------------------------------------------------------------------------- submit


def _fingerprint(body: JobCreate) -> str:
    blob = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _idempotent_job(session: Session, settings: Settings, principal: Principal, key: str,
                    fingerprint: str) -> Job | None:
    row = session.get(IdempotencyKey, (principal.id, key))
    if row is None:
        return None
    if row.created_at < utcnow() - timedelta(seconds=settings.idempotency_ttl_s):
        return None
    if row.fingerprint != fingerprint:
        raise ProblemError(422, "idempotency-key-reused",
                           "this Idempotency-Key was already used with a different request body")
    return session.get(Job, row.job_id)


def plan_spec(db: Database, settings: Settings, helpers: Helpers, principal: Principal,
              spec: dict[str, Any], *, require_plan: bool = True) -> dict[str, Any]:
    """Validate ``spec`` against the schema and the server limits and plan it (in a helper
    process); returns ``{"title", "plan"}`` (see ``specs.plan_and_check``). Raises 422
    problems naming the field."""
    check_nonfinite(spec)
    with db.read() as s:
        refs = upload_refs(s, settings, principal.id, referenced_uploads(spec))
    limits = JobLimits.from_settings(settings).model_dump()
    return helpers.call(functools.partial(plan_and_check, require_plan=require_plan),
                        spec, refs, limits, timeout=300)


def create_job(db: Database, settings: Settings, executor: Executor, helpers: Helpers,
               principal: Principal, body: JobCreate, idempotency_key: str | None
               ) -> tuple[Job, bool]:
    """Validate and enqueue; returns ``(job, replayed)``."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ProblemError(400, "invalid-idempotency-key", "Idempotency-Key must be 1-255 chars")
    fingerprint = _fingerprint(body)
    if idempotency_key:
        with db.read() as s:
            job = _idempotent_job(s, settings, principal, idempotency_key, fingerprint)
        if job is not None:
            return job, True
    with db.read() as s:
        check_job_quota(s, settings, principal.id)
    title = plan_spec(db, settings, helpers, principal, body.spec, require_plan=False)["title"]
    job = Job(id=new_id("job"), principal_id=principal.id, status="queued",
              executor=settings.executor, title=title[:200], spec=body.spec,
              attempt=1, max_attempts=settings.max_attempts, progress={}, event_seq=0)
    try:
        with db.write() as s:
            if idempotency_key:
                stale = s.get(IdempotencyKey, (principal.id, idempotency_key))
                if stale is not None:       # expired or raced: re-check under the write lock
                    existing = _idempotent_job(s, settings, principal, idempotency_key,
                                               fingerprint)
                    if existing is not None:
                        return existing, True
                    s.delete(stale)
                    s.flush()
            check_job_quota(s, settings, principal.id)   # again, under the write lock
            s.add(job)
            s.flush()
            if idempotency_key:
                s.add(IdempotencyKey(principal_id=principal.id, key=idempotency_key,
                                     fingerprint=fingerprint, job_id=job.id))
            append_event(s, job.id, "status", {"type": "status", "status": "queued",
                                               "attempt": 1, "terminal": False}, 1)
            executor.on_submit(s, job)
    except IntegrityError:
        if not idempotency_key:
            raise
        with db.read() as s:        # a concurrent request with the same key won the race
            existing = _idempotent_job(s, settings, principal, idempotency_key, fingerprint)
        if existing is None:
            raise ProblemError(409, "idempotency-conflict", "a request with this "
                               "Idempotency-Key is being processed; retry") from None
        return existing, True
    executor.after_commit(job.id)
    return job, False


# --------------------------------------------------------------------------- queries


def get_job(db: Database, principal: Principal, job_id: str) -> Job:
    """Job ``job_id`` of ``principal``; raises ProblemError 404 ``not-found``."""
    with db.read() as s:
        job = s.get(Job, job_id)
    if job is None or job.principal_id != principal.id:
        raise not_found(job_id)
    return job


def list_jobs(db: Database, principal: Principal, *, statuses: Sequence[str] | None,
              limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on ``(created_at, id)``."""
    q = select(Job).where(Job.principal_id == principal.id)
    if statuses:
        q = q.where(Job.status.in_(list(statuses)))
    return keyset_page(db, q, Job, limit=limit, cursor=cursor)


def events_after(db: Database, job_id: str, after: int, limit: int = 500
                 ) -> tuple[list[EventPublic], str]:
    """Events with ``seq > after`` plus the job's current status."""
    with db.read() as s:
        rows = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                     JobEvent.seq > after)
                              .order_by(JobEvent.seq).limit(limit)))
        status = s.scalar(select(Job.status).where(Job.id == job_id)) or "deleted"
    return [EventPublic(id=r.seq, type=r.type, attempt=r.attempt, created_at=r.created_at,
                        data=r.data) for r in rows], status


# --------------------------------------------------------------------------- commands


def cancel_job(db: Database, executor: Executor, principal: Principal, job_id: str) -> Job:
    """Idempotent, best effort: queued → canceled now; running → cancelling."""
    with db.write() as s:
        job = s.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.principal_id != principal.id:
            raise not_found(job_id)
        if job.status == "queued":
            transition(s, job, "canceled", reason="canceled by the user")
        elif job.status == "running":
            transition(s, job, "cancelling", reason="canceled by the user")
            executor.on_cancel(s, job)
    executor.after_commit(job.id)
    return job


def delete_job(db: Database, settings: Settings, executor: Executor, principal: Principal,
               job_id: str) -> None:
    """Remove a terminal job, its events and its artifacts (409 while it is active)."""
    with db.write() as s:
        job = s.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.principal_id != principal.id:
            raise not_found(job_id)
        if job.status in ACTIVE:
            raise ProblemError(409, "job-active", f"job {job_id} is {job.status}; cancel it and "
                               "wait for a terminal status before deleting it")
        s.execute(delete(Job).where(Job.id == job_id))
    executor.on_delete(job_id)
    shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)


# --------------------------------------------------------------------------- views


def job_links(job_id: str) -> dict[str, str]:
    """API links of a job (self, events, cancel, artifacts, report, demo)."""
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel",
            "artifacts": f"{base}/artifacts", "report": f"{base}/artifacts/report/report.html",
            "demo": f"{base}/demo"}


def to_public(job: Job) -> JobPublic:
    """API view of a job row."""
    return JobPublic(
        id=job.id, status=job.status, title=job.title, attempt=job.attempt,
        max_attempts=job.max_attempts, created_at=job.created_at, updated_at=job.updated_at,
        started_at=job.started_at, finished_at=job.finished_at,
        progress=Progress.model_validate(job.progress or {}), error=job.error,
        result=job.result, spec=job.spec, links=job_links(job.id))


def to_page(jobs: list[Job], next_cursor: str | None) -> JobsPage:
    """One page of jobs with the cursor of the next page (None on the last)."""
    return JobsPage(data=[to_public(j) for j in jobs], next_cursor=next_cursor)


