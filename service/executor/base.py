"""Executor contract and the per-attempt child process handle.

Contract: the ``jobs`` table is the single source of truth. An executor only decides
*where* queued work runs; it never keeps job state of its own that the table does not
have. Hooks run inside the API's transactions (``on_submit``, ``on_cancel``) or right
after their commit (``after_commit``), so a crash in between loses nothing: either the
job row and its dispatch record exist together, or neither does.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
import uuid
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from service.db import Job


def worker_name() -> str:
    """``host:pid:random`` (the pid lets a restarted server on the same host tell that the
    previous one is gone)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def worker_is_dead(worker: str | None, host: str) -> bool:
    """True when ``worker`` (from ``worker_name``) ran on ``host`` and its process is gone.

    A live pid may belong to an unrelated process after pid reuse; such a job is left to
    the heartbeat sweep.
    """
    if worker is None:
        return True
    parts = worker.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Executor:
    """Dispatches queued jobs; see the module docstring for the contract. Every hook is
    optional (no-op by default)."""

    name: ClassVar[str] = "base"

    def on_submit(self, session: Session, job: Job) -> None:
        """Inside the submit transaction (after the job row is flushed)."""

    def on_cancel(self, session: Session, job: Job) -> None:
        """Inside the cancel transaction, after the job became ``cancelling``."""

    def after_commit(self, job_id: str) -> None:
        """After a submit/cancel committed (wake-ups)."""

    def on_delete(self, job_id: str) -> None:
        """After a terminal job was deleted (free executor-side resources)."""

    def start(self) -> None:
        """Start background machinery (API lifespan)."""

    def stop(self) -> None:
        """Stop background machinery; running attempts are asked to stop."""


class Attempt:
    """One attempt of a job (or of one task of a job) in a fresh ``spawn`` process.

    The child (``service.jobrunner.child_main``) sends ``("event", dict)`` and finally one
    ``("result", dict)`` over a pipe. Stopping escalates: cooperative stop flag (polled by
    the search every training step) → SIGTERM after ``cancel_grace`` → SIGKILL after
    ``kill_grace``.
    """

    def __init__(self, payload: dict[str, Any]) -> None:
        from service.jobrunner import child_main

        ctx = mp.get_context("spawn")
        self.payload = payload
        self._recv, send = ctx.Pipe(duplex=False)
        self._stop = ctx.Event()
        self.process = ctx.Process(target=child_main, args=(payload, send, self._stop),
                                   name=f"pi-opt-{payload['job_id']}-{payload['mode']}")
        self.process.start()
        send.close()
        self.result: dict[str, Any] | None = None
        self.closed = False
        self.stop_requested_at: float | None = None
        self.terminated_at: float | None = None

    @property
    def pid(self) -> int:
        """Process id of the attempt's job-runner process."""
        assert self.process.pid is not None
        return self.process.pid

    def alive(self) -> bool:
        """True while the job-runner process runs."""
        return self.process.is_alive()

    def drain(self, max_items: int = 2000) -> list[dict[str, Any]]:
        """Events available now (non-blocking); stores the result message when it comes."""
        events: list[dict[str, Any]] = []
        try:
            while not self.closed and len(events) < max_items and self._recv.poll():
                kind, body = self._recv.recv()
                if kind == "event":
                    events.append(body)
                elif kind == "result":
                    self.result = body
        except (EOFError, OSError, ValueError):
            self.closed = True
        return events

    def request_stop(self) -> None:
        """Ask the runner to stop (once); the time is kept for escalation."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            self._stop.set()

    def escalate(self, cancel_grace: float, kill_grace: float) -> None:
        """SIGTERM / SIGKILL once the graces after ``request_stop`` have passed."""
        if self.stop_requested_at is None or not self.alive():
            return
        now = time.monotonic()
        if self.terminated_at is None:
            if now - self.stop_requested_at >= cancel_grace:
                self.process.terminate()
                self.terminated_at = now
        elif now - self.terminated_at >= kill_grace:
            self.process.kill()

    def close(self) -> None:
        """Join the process (5 s), kill it if still alive, close the event pipe."""
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self._recv.close()


