"""Scale-out executor: PostgreSQL + procrastinate; N workers cooperate on ONE job's study.

Why procrastinate: it needs nothing but the PostgreSQL we already run (no Redis or
RabbitMQ as Celery/RQ/Dramatiq/arq would), claims work with ``FOR UPDATE SKIP LOCKED``,
wakes idle workers with LISTEN/NOTIFY, keeps worker heartbeats and lists the jobs of
dead workers for retry, supports aborting, and can defer *on a caller's connection*, so
a queue entry commits atomically with our own rows.

Flow of one job (``job_tasks`` is the ledger of its units of work)::

    POST /v1/jobs ──(same transaction)──► jobs row + job_tasks(prepare) + queue entry
    prepare     data, baseline (trained once), Optuna study in schema optuna_<job id>
        └─(same transaction as "done")──► job_tasks(trials, shard 0..fanout-1) + queue entries
    trials[k]   SearchSession.run_trials(n_trials=total): the total is study-wide, so the
                shards share the trials; whichever worker is free takes the next one
        └─ the last shard to finish (counted under the job's row lock) ──► job_tasks(finalize)
    finalize    report + artifacts ──► job succeeded

Transactional outbox: every ``job_tasks`` row is inserted in the same transaction as
the state change that creates it *and* its procrastinate queue row (procrastinate defers
on our SQLAlchemy connection), so a crash between commit and defer cannot happen and
nothing is lost. Tasks claim their row by compare-and-set (state + heartbeat), so a
duplicate delivery is a no-op.

Recovery (reconciler loop in every worker): procrastinate jobs of workers whose
heartbeat is stale (``get_stalled_jobs``) are retried; the retried task takes over its
row when our own heartbeat on the row is stale too (attempt + 1, ``max_attempts``).
A runner that crashes under a live worker is re-queued directly by that worker. Rows
stuck ``running`` with a long-stale heartbeat are re-queued, and ``cancelling`` jobs
with no running task become ``canceled``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.db import TERMINAL, Database, Job, JobTask, utcnow
from service.executor.base import Attempt, Executor, worker_name
from service.executor.local import runner_payload
from service.jobs import record_events, transition
from service.problems import ProblemError
from service.settings import Settings

log = logging.getLogger("service.executor")

QUEUE = "pi-opt"
TASK_NAME = "pi_opt.run_task"
_SCHEMA_LOCK = 0x70696F71


def libpq_dsn(url: str) -> str:
    """``postgresql+psycopg://...`` → ``postgresql://...`` (for psycopg / procrastinate)."""
    return "postgresql://" + url.split("://", 1)[1]


def optuna_schema(job_id: str) -> str:
    """PostgreSQL schema of a job's Optuna storage; raises ValueError for an unsafe id."""
    if not job_id.replace("_", "").isalnum():
        raise ValueError(f"unsafe job id {job_id!r}")
    return f"optuna_{job_id}"


def optuna_storage(settings: Settings, job_id: str) -> str:
    """Optuna RDB storage URL of one job: the same database, the job's own schema (the
    engine's study name is fixed, and Optuna's tables would clash with ours)."""
    sep = "&" if "?" in settings.url else "?"
    return f"{settings.url}{sep}options=-csearch_path%3D{optuna_schema(job_id)}"


def _sync_app() -> Any:
    """An unopened app used only to defer on a caller's connection."""
    import procrastinate

    return procrastinate.App(connector=procrastinate.SyncPsycopgConnector())


def defer_row(session: Session, app: Any, row: JobTask) -> None:
    """Insert the queue entry for ``row`` inside ``session``'s transaction."""
    session.flush()
    conn = session.connection().connection.driver_connection
    row.queue_job_id = app.configure_task(TASK_NAME, queue=QUEUE, connection=conn).defer(
        task_id=row.id)
    row.state = "queued"
    row.updated_at = utcnow()


def ensure_queue_schema(db: Database) -> None:
    """Install procrastinate's schema once (advisory-locked; API and workers race here)."""
    from procrastinate.schema import SchemaManager

    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK})
        try:
            exists = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
            if exists is None:
                raw = conn.connection.driver_connection
                raw.execute(SchemaManager.get_schema())   # type: ignore[union-attr]
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK})
            conn.commit()


def _running_tasks(session: Session, job_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(JobTask).where(
        JobTask.job_id == job_id, JobTask.state == "running")) or 0)


def _retry(session: Session, app: Any, job: Job, row: JobTask, reason: str, *,
           counts: bool = True) -> None:
    """Re-queue ``row``; ``counts`` (a runner failure, not a worker crash) makes it the job's
    next attempt, or fails the job after max_attempts."""
    if counts and job.attempt >= job.max_attempts:
        row.state = "failed"
        job.error = ProblemError(500, "attempts-exhausted",
                                 f"gave up after {job.attempt} attempts: {reason}",
                                 title="Job Failed").to_problem()
        transition(session, job, "failed", reason=reason)
        return
    if counts:
        job.attempt += 1
    row.worker = None
    defer_row(session, app, row)
    record_events(session, job, [{"type": "requeued", "task": row.kind, "shard": row.shard,
                                  "attempt": job.attempt, "reason": reason}])


class ProcrastinateExecutor(Executor):
    """API side: creates the ``prepare`` task with the job; cancel/delete bookkeeping."""

    name = "procrastinate"

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.app = _sync_app()

    def on_submit(self, session: Session, job: Job) -> None:
        """Queue the job's ``prepare`` task in ``session``."""
        row = JobTask(job_id=job.id, kind="prepare", shard=0, state="queued")
        session.add(row)
        defer_row(session, self.app, row)

    def on_cancel(self, session: Session, job: Job) -> None:
        """Mark the job canceled at once when none of its tasks runs yet."""
        if _running_tasks(session, job.id) == 0:
            transition(session, job, "canceled", reason="canceled before any task started")

    def on_delete(self, job_id: str) -> None:
        """Drop the job's Optuna schema."""
        with self.db.write() as s:
            s.execute(text(f'DROP SCHEMA IF EXISTS "{optuna_schema(job_id)}" CASCADE'))


class TaskRunner:
    """Worker side: runs one ``job_tasks`` row in a child process and settles it."""

    def __init__(self, settings: Settings, db: Database, name: str,
                 shutting_down: threading.Event) -> None:
        self.settings, self.db, self.name = settings, db, name
        self.shutting_down = shutting_down
        self.app = _sync_app()

    def _claim(self, task_id: int) -> dict[str, Any] | None:
        stale = utcnow() - timedelta(seconds=self.settings.stale_after_s)
        with self.db.write() as s:
            row = s.scalar(select(JobTask).where(JobTask.id == task_id).with_for_update())
            if row is None:
                return None
            job = s.scalar(select(Job).where(Job.id == row.job_id).with_for_update())
            if job is None or row.state in ("done", "failed", "canceled"):
                return None
            if row.state == "running" and row.heartbeat_at is not None and \
                    row.heartbeat_at > stale:
                return None                       # a live worker has it: duplicate delivery
            if job.status in TERMINAL or job.status == "cancelling":
                row.state = "canceled"
                if job.status == "cancelling" and _running_tasks(s, job.id) == 0:
                    transition(s, job, "canceled")
                return None
            if row.state == "running":            # its worker died: take over
                # (a worker crash is not an attempt: only runner failures are)
                record_events(s, job, [{"type": "requeued", "task": row.kind,
                                        "shard": row.shard, "attempt": job.attempt,
                                        "reason": f"worker {row.worker} died"}])
            if row.kind == "prepare":
                s.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{optuna_schema(job.id)}"'))
            row.state, row.worker, row.heartbeat_at = "running", self.name, utcnow()
            row.tries += 1
            job.heartbeat_at = utcnow()
            job.worker = self.name
            if job.status == "queued":
                transition(s, job, "running", worker=self.name)
            record_events(s, job, [{"type": "task", "task": row.kind, "shard": row.shard,
                                    "state": "started", "worker": self.name}])
            return runner_payload(self.settings, job, mode=row.kind, worker=self.name,
                                  storage=optuna_storage(self.settings, job.id))

    def run(self, task_id: int, should_abort: Any = None) -> None:
        """Run queue task ``task_id`` in a child process, recording events and heartbeats."""
        payload = self._claim(task_id)
        if payload is None:
            return
        att = Attempt(payload)
        last_beat = time.monotonic()
        try:
            while True:
                att.escalate(self.settings.cancel_grace_s, self.settings.kill_grace_s)
                events = att.drain()
                finished = not att.alive()
                if finished:
                    events += att.drain()
                beat = time.monotonic() - last_beat >= self.settings.heartbeat_interval_s
                with self.db.write() as s:
                    row = s.get(JobTask, task_id)
                    job = s.get(Job, payload["job_id"])
                    if job is None or row is None:
                        att.request_stop()
                    else:
                        if events:
                            record_events(s, job, events)
                        if beat:
                            row.heartbeat_at = job.heartbeat_at = utcnow()
                            last_beat = time.monotonic()
                        if job.status != "running" or row.worker != self.name:
                            att.request_stop()
                if self.shutting_down.is_set() or (should_abort is not None and should_abort()):
                    att.request_stop()
                if finished:
                    break
                time.sleep(self.settings.poll_interval_s)
            self._settle(task_id, att)
        finally:
            att.close()

    def _settle(self, task_id: int, att: Attempt) -> None:
        res = att.result or {}
        status = res.get("status")
        with self.db.write() as s:
            row = s.scalar(select(JobTask).where(JobTask.id == task_id).with_for_update())
            if row is None or row.worker != self.name or row.state != "running":
                return
            job = s.scalar(select(Job).where(Job.id == row.job_id).with_for_update())
            if job is None:
                return
            row.updated_at = utcnow()
            if job.status in TERMINAL:
                row.state = "canceled"
            elif status == "succeeded":
                row.state = "done"
                if res.get("best") is not None:
                    job.progress = {**(job.progress or {}), "best_so_far": res["best"]}
                self._advance(s, job, row, res)
            elif status == "failed":
                row.state = "failed"
                job.error = res.get("error")
                transition(s, job, "failed")
            elif job.status == "cancelling":
                row.state = "canceled"
                if _running_tasks(s, job.id) == 0:
                    transition(s, job, "canceled")
            elif status == "canceled":           # this worker is shutting down
                _retry(s, self.app, job, row, "worker shut down", counts=False)
            else:
                _retry(s, self.app, job, row, f"runner exited with code {att.process.exitcode}")

    def _advance(self, s: Session, job: Job, row: JobTask, res: dict[str, Any]) -> None:
        if row.kind == "prepare":
            for shard in range(self.settings.fanout):
                nxt = JobTask(job_id=job.id, kind="trials", shard=shard)
                s.add(nxt)
                defer_row(s, self.app, nxt)
        elif row.kind == "trials":
            rows = list(s.scalars(select(JobTask).where(JobTask.job_id == job.id)))
            trials_open = [r for r in rows if r.kind == "trials" and r.state != "done"]
            if not trials_open and not any(r.kind == "finalize" for r in rows):
                nxt = JobTask(job_id=job.id, kind="finalize", shard=0)
                s.add(nxt)
                defer_row(s, self.app, nxt)
        elif row.kind == "finalize":
            job.result = res.get("summary")
            transition(s, job, "succeeded")


class Reconciler:
    """Periodic recovery run by every worker (all steps are idempotent and row-locked)."""

    def __init__(self, settings: Settings, db: Database, app: Any) -> None:
        self.settings, self.db, self.app = settings, db, app
        self.sync_app = _sync_app()

    async def run_forever(self) -> None:
        """Call :meth:`once` every ``2 * heartbeat_interval_s`` seconds, forever."""
        while True:
            try:
                await self.once()
            except Exception:  # noqa: BLE001 - keep reconciling
                log.exception("reconcile failed")
            await asyncio.sleep(self.settings.heartbeat_interval_s * 2)

    async def once(self) -> None:
        """Retry queue jobs of dead workers (no heartbeat for ``stale_after_s`` s), then sweep."""
        stalled = await self.app.job_manager.get_stalled_jobs(
            queue=QUEUE, seconds_since_heartbeat=self.settings.stale_after_s)
        for pjob in stalled:
            log.warning("retrying queue job %s of a dead worker", pjob.id)
            await self.app.job_manager.retry_job(pjob)
        await asyncio.to_thread(self._sweep)

    def _sweep(self) -> None:
        very_stale = utcnow() - timedelta(seconds=self.settings.stale_after_s * 3)
        with self.db.write() as s:
            rows = list(s.scalars(select(JobTask).where(
                JobTask.state == "running", JobTask.heartbeat_at < very_stale)
                .with_for_update(skip_locked=True)))
            for row in rows:
                job = s.scalar(select(Job).where(Job.id == row.job_id).with_for_update())
                if job is None:
                    continue
                if job.status in TERMINAL or job.status == "cancelling":
                    row.state = "canceled"
                else:
                    _retry(s, self.sync_app, job, row, f"task on {row.worker} went silent",
                           counts=False)
            for job in s.scalars(select(Job).where(Job.status == "cancelling",
                                                   Job.executor == "procrastinate")
                                 .with_for_update(skip_locked=True)):
                if _running_tasks(s, job.id) == 0:
                    transition(s, job, "canceled")


def run_worker(settings: Settings, db: Database, *, name: str | None = None) -> None:
    """``pi-opt worker`` in scale-out mode: a procrastinate worker plus the reconciler."""
    import procrastinate

    name = name or worker_name()
    shutting_down = threading.Event()
    runner = TaskRunner(settings, db, name, shutting_down)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=libpq_dsn(settings.url)))

    @app.task(name=TASK_NAME, queue=QUEUE, pass_context=True)
    def run_task(context: Any, task_id: int) -> None:
        runner.run(task_id, should_abort=context.should_abort)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with app.open_async():
            worker_task = asyncio.create_task(app.run_worker_async(
                queues=[QUEUE], concurrency=1, name=name, install_signal_handlers=False,
                update_heartbeat_interval=settings.heartbeat_interval_s,
                stalled_worker_timeout=settings.stale_after_s,
                fetch_job_polling_interval=max(1.0, settings.heartbeat_interval_s)))

            def _stop() -> None:
                shutting_down.set()
                worker_task.cancel()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, _stop)
            reconciler = asyncio.create_task(Reconciler(settings, db, app).run_forever())
            log.info("worker %s ready (queue %s)", name, QUEUE)
            try:
                await worker_task
            except asyncio.CancelledError:
                pass
            finally:
                reconciler.cancel()

    asyncio.run(main())
