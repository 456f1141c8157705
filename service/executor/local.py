"""Embedded executor: a supervisor thread (in the API process or in ``pi-opt worker``).

It claims queued jobs atomically (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL), runs each attempt in a fresh spawn process, relays its events
into ``job_events``, heartbeats ``jobs.heartbeat_at``, escalates cancellation, and
re-queues (attempt + 1, up to ``max_attempts``) jobs whose runner crashed or whose
worker stopped heartbeating. A new attempt resumes the same Optuna study (journal file
in the job directory), so finished trials are kept.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select

from service.db import TERMINAL, Database, Job, utcnow
from service.executor.base import Attempt, Executor, worker_is_dead, worker_name
from service.jobs import recover_job, record_events, requeue_or_fail, transition
from service.problems import ProblemError
from service.usage import dir_bytes
from service.settings import Settings

log = logging.getLogger("service.executor")
DEADLINE_GRACE_S = 60.0   # the runner stops its search itself at the deadline; then SIGTERM


def runner_payload(settings: Settings, job: Job, *, mode: str, worker: str,
                   storage: str | None = None) -> dict[str, Any]:
    """What a child process needs (JSON-able; no secrets besides the database URL)."""
    return {"job_id": job.id, "attempt": job.attempt, "mode": mode, "spec": job.spec,
            "principal_id": job.principal_id, "workdir": str(settings.job_dir(job.id)),
            "storage": storage, "database_url": settings.url,
            "uploads_dir": str(settings.uploads_dir), "worker": worker,
            "log_level": settings.log_level, "parent_pid": os.getpid(),
            "nice": settings.runner_nice,
            "deadline": job_deadline(settings, job)}


def job_deadline(settings: Settings, job: Job) -> float:
    """Epoch seconds at which the job's time per job (``max_job_seconds``) is used up."""
    started = job.started_at or utcnow()
    return started.timestamp() + settings.max_job_seconds


@dataclass
class _Running:
    attempt: Attempt
    job_id: str
    deadline: float                     # epoch seconds: time per job used up (+ grace)
    last_beat: float = field(default_factory=time.monotonic)
    timed_out: bool = False


class Supervisor:
    """The claim / run / relay / heartbeat / recover loop (one thread)."""

    def __init__(self, settings: Settings, db: Database, *, name: str | None = None) -> None:
        self.settings, self.db = settings, db
        self.name = name or worker_name()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.running: dict[str, _Running] = {}
        self._last_sweep = 0.0

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Loop until :meth:`stop`: recover orphans, then step every ``poll_interval_s`` seconds."""
        log.info("supervisor %s started", self.name)
        try:
            self.recover_orphans()
        except Exception:  # noqa: BLE001 - the heartbeat sweep recovers them later
            log.exception("startup recovery failed")
        while not self.stopping.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - keep supervising; the DB may be back soon
                log.exception("supervisor step failed")
                time.sleep(self.settings.poll_interval_s)
            self.wake.wait(self.settings.poll_interval_s)
            self.wake.clear()
        self._shutdown()

    def step(self) -> None:
        """One pass: sweep stale jobs when due, pump running attempts, claim queued jobs."""
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.heartbeat_interval_s:
            self._last_sweep = now
            self.sweep_stale()
        for job_id in list(self.running):
            self.pump(self.running[job_id])
        while len(self.running) < self.settings.max_concurrent_jobs and self.claim():
            pass

    def stop(self) -> None:
        """Ask :meth:`run` to stop (and wake it)."""
        self.stopping.set()
        self.wake.set()

    # ------------------------------------------------------------------ parts

    def claim(self) -> bool:
        """Start the oldest queued job; False when there is none."""
        with self.db.write() as s:
            job = s.scalar(select(Job).where(Job.status == "queued", Job.executor == "local")
                           .order_by(Job.created_at, Job.id).limit(1)
                           .with_for_update(skip_locked=True))
            if job is None:
                return False
            job.worker = self.name
            job.heartbeat_at = utcnow()
            transition(s, job, "running", worker=self.name)
            payload = runner_payload(self.settings, job, mode="full", worker=self.name)
        try:
            attempt = Attempt(payload)
        except Exception as exc:  # noqa: BLE001
            log.exception("cannot start a runner for %s", payload["job_id"])
            with self.db.write() as s:
                job = s.get(Job, payload["job_id"])
                if job is not None:
                    requeue_or_fail(s, job, f"runner could not start: {type(exc).__name__}")
            return True
        with self.db.write() as s:
            job = s.get(Job, payload["job_id"])
            if job is not None:
                job.runner_pid = attempt.pid
        self.running[payload["job_id"]] = _Running(attempt, payload["job_id"],
                                                   payload["deadline"] + DEADLINE_GRACE_S)
        log.info("job %s attempt %s: runner pid %s", payload["job_id"], payload["attempt"],
                 attempt.pid)
        return True

    def pump(self, run: _Running) -> None:
        """Relay events, heartbeat, honour cancel, settle a finished runner."""
        att = run.attempt
        if not run.timed_out and time.time() > run.deadline:
            log.warning("job %s: past its time per job; stopping it", run.job_id)
            run.timed_out = True
            att.request_stop()
        att.escalate(self.settings.cancel_grace_s, self.settings.kill_grace_s)
        events = att.drain()
        finished = not att.alive()
        if finished:
            events += att.drain()
        beat = time.monotonic() - run.last_beat >= self.settings.heartbeat_interval_s
        if not (events or finished or beat):
            with self.db.read() as s:
                status = s.scalar(select(Job.status).where(Job.id == run.job_id))
            if status == "running":
                return
        with self.db.write() as s:
            job = s.scalar(select(Job).where(Job.id == run.job_id).with_for_update())
            mine = job is not None and job.worker == self.name and \
                job.status in ("running", "cancelling")
            if not mine:
                att.request_stop()          # deleted or handed to another worker meanwhile
            else:
                assert job is not None
                if events:
                    record_events(s, job, events)
                if beat:
                    job.heartbeat_at = utcnow()
                    run.last_beat = time.monotonic()
                if job.status == "cancelling":
                    att.request_stop()
                if finished:
                    self._settle(s, job, run)
        if finished:
            att.close()
            self.running.pop(run.job_id, None)

    def _settle(self, s: Any, job: Job, run: _Running) -> None:
        att = run.attempt
        res = att.result or {}
        status = res.get("status")
        job.updated_at = utcnow()
        if status == "succeeded":
            job.result = res.get("summary")
            if res.get("best") is not None:
                job.progress = {**(job.progress or {}), "best_so_far": res["best"]}
            transition(s, job, "succeeded")
        elif status == "failed":
            job.error = res.get("error")
            transition(s, job, "failed")
        elif status == "canceled" and job.status == "cancelling":
            transition(s, job, "canceled")
        elif status == "canceled" and run.timed_out:
            job.error = ProblemError(
                422, "time-limit-exceeded", "the job ran past the server's time per job "
                f"(max_job_seconds = {self.settings.max_job_seconds:g})",
                title="Job Failed").to_problem()
            transition(s, job, "failed")
        elif status == "canceled":
            recover_job(s, job, "worker shut down; the job resumes", crash=False,
                        max_recoveries=self.settings.max_recoveries)
        else:
            requeue_or_fail(s, job, f"runner exited with code {att.process.exitcode}")
        if job.status in TERMINAL:
            job.artifact_bytes = dir_bytes(self.settings.job_dir(job.id))

    def sweep_stale(self) -> None:
        """Re-queue jobs whose worker stopped heartbeating (crashed or killed)."""
        cutoff = utcnow() - timedelta(seconds=self.settings.stale_after_s)
        with self.db.write() as s:
            stale = s.scalars(select(Job).where(
                Job.status.in_(("running", "cancelling")), Job.executor == "local",
                or_(Job.heartbeat_at < cutoff, Job.heartbeat_at.is_(None)))
                .with_for_update(skip_locked=True))
            for job in stale:
                if job.id in self.running and job.worker == self.name:
                    continue
                log.warning("job %s: worker %s went silent; recovering", job.id, job.worker)
                recover_job(s, job, f"worker {job.worker} stopped heartbeating",
                            max_recoveries=self.settings.max_recoveries)

    def recover_orphans(self) -> int:
        """At startup: re-queue at once the jobs whose worker was a process of this host
        that no longer exists (a crashed server); returns how many. Others wait for the
        heartbeat sweep."""
        host = socket.gethostname()
        n = 0
        with self.db.write() as s:
            rows = s.scalars(select(Job).where(Job.status.in_(("running", "cancelling")),
                                               Job.executor == "local").with_for_update())
            for job in rows:
                if not worker_is_dead(job.worker, host):
                    continue
                log.warning("job %s: its server %s is gone; re-queued", job.id, job.worker)
                recover_job(s, job, f"server {job.worker} crashed; the job resumes",
                            max_recoveries=self.settings.max_recoveries)
                n += 1
        return n

    def _shutdown(self) -> None:
        """Ask runners to stop; their jobs are re-queued for the next worker."""
        for run in self.running.values():
            run.attempt.request_stop()
        deadline = time.monotonic() + min(self.settings.cancel_grace_s, 15.0)
        while self.running and time.monotonic() < deadline:
            for job_id in list(self.running):
                self.pump(self.running[job_id])
            time.sleep(0.1)
        for job_id, run in list(self.running.items()):
            run.attempt.process.kill()
            run.attempt.close()
            with self.db.write() as s:
                job = s.get(Job, job_id)
                if job is not None and job.worker == self.name and job.status == "running":
                    recover_job(s, job, "worker shut down; the job resumes", crash=False,
                                max_recoveries=self.settings.max_recoveries)
        self.running.clear()
        log.info("supervisor %s stopped", self.name)


class LocalExecutor(Executor):
    """SQLite-friendly executor; ``run_supervisor=False`` leaves the work to ``pi-opt worker``."""

    name = "local"

    def __init__(self, settings: Settings, db: Database, *, run_supervisor: bool) -> None:
        self.settings, self.db = settings, db
        self.supervisor = Supervisor(settings, db) if run_supervisor else None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the supervisor thread (when this process runs an embedded worker)."""
        if self.supervisor is not None:
            self._thread = threading.Thread(target=self.supervisor.run, name="pi-opt-supervisor",
                                            daemon=True)
            self._thread.start()

    def after_commit(self, job_id: str) -> None:
        """Wake the supervisor after job ``job_id`` was committed."""
        if self.supervisor is not None:
            self.supervisor.wake.set()

    def stop(self) -> None:
        """Stop the supervisor; waits up to ``cancel_grace_s + 30`` seconds."""
        if self.supervisor is not None and self._thread is not None:
            self.supervisor.stop()
            self._thread.join(timeout=self.settings.cancel_grace_s + 30)
