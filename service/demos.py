"""Encrypted-inference demo on one Pareto point of a finished job.

Asynchronous: ``POST /v1/jobs/{id}/demo`` answers 202 with a demo resource to poll
(``GET /v1/jobs/{id}/demos/{demo_id}``). Each demo runs ``python -m service.demo_runner``
in its own subprocess (CrypTen keeps process-global state, and the API process must not
load it), bounded by ``demo_timeout_s`` and ``demo_concurrency``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.auth import Principal
from service.db import Database, Demo, Job, utcnow
from service.ids import new_id
from service.problems import ProblemError
from service.schemas import DemoCreate, DemoPublic
from service.settings import Settings

log = logging.getLogger("service.demos")


def front_point(job_dir: Path, trial: int | str) -> dict[str, Any]:
    """The report's front point for ``trial`` (``"best"`` = highest val accuracy)."""
    report = job_dir / "report" / "pareto.json"
    try:
        points = json.loads(report.read_text())["points"]
    except (OSError, ValueError, KeyError):
        raise ProblemError(409, "no-report", "the job has no Pareto report") from None
    front = [p for p in points if p.get("pareto") and p.get("artifact")]
    if not front:
        raise ProblemError(409, "empty-front", "the report has no front point with an artifact")
    if trial == "best":
        best: dict[str, Any] = max(front, key=lambda p: (p["val_accuracy"], -p["relus"]))
        return best
    for p in front:
        if p["trial"] == trial:
            return dict(p)
    raise ProblemError(422, "unknown-trial", f"trial {trial} is not on the Pareto front; "
                       f"front trials: {sorted(p['trial'] for p in front)}")


class DemoRunner:
    """Runs demo subprocesses from a small thread pool."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.pool = ThreadPoolExecutor(max_workers=settings.demo_concurrency,
                                       thread_name_prefix="pi-opt-demo")

    def recover(self) -> None:
        """Demos interrupted by a restart are marked failed."""
        with self.db.write() as s:
            for demo in s.scalars(select(Demo).where(Demo.status.in_(("queued", "running")))):
                demo.status = "failed"
                demo.finished_at = utcnow()
                demo.error = ProblemError(503, "interrupted", "the server restarted during the "
                                          "demo; submit it again").to_problem()

    def create(self, principal: Principal, job_id: str, body: DemoCreate) -> Demo:
        """Queue a demo of front point ``body.trial`` of a succeeded job.

            Raises ProblemError 404 ``not-found`` (no such job of this principal) or 409
            ``job-not-finished``.
        """
        with self.db.read() as s:
            job = s.get(Job, job_id)
        if job is None or job.principal_id != principal.id:
            raise ProblemError(404, "not-found", f"job {job_id} not found")
        if job.status != "succeeded":
            raise ProblemError(409, "job-not-finished",
                               f"job {job_id} is {job.status}; demos need a succeeded job")
        point = front_point(self.settings.job_dir(job_id), body.trial)
        demo = Demo(id=new_id("demo"), job_id=job_id, principal_id=principal.id,
                    trial=int(point["trial"]), index=body.index, status="queued")
        with self.db.write() as s:
            s.add(demo)
        args = {"artifact_dir": str(self.settings.job_dir(job_id) / point["artifact"]),
                "index": body.index, "spec": job.spec, "principal_id": job.principal_id,
                "database_url": self.settings.url, "uploads_dir": str(self.settings.uploads_dir)}
        self.pool.submit(self._run, demo.id, args)
        return demo

    def _run(self, demo_id: str, args: dict[str, Any]) -> None:
        with self.db.write() as s:
            demo = s.get(Demo, demo_id)
            if demo is None:
                return
            demo.status = "running"
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        try:
            proc = subprocess.run([sys.executable, "-m", "service.demo_runner"],
                                  input=json.dumps(args), capture_output=True, text=True,
                                  timeout=self.settings.demo_timeout_s, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            out = json.loads(lines[-1]) if lines else {}
            if "result" in out:
                result = out["result"]
            else:
                error = out.get("error") or ProblemError(
                    500, "demo-crashed", f"the demo process exited with code {proc.returncode}"
                ).to_problem()
                if proc.returncode:
                    log.warning("demo %s failed: %s", demo_id, proc.stderr[-4000:])
        except subprocess.TimeoutExpired:
            error = ProblemError(504, "demo-timeout", "the demo exceeded "
                                 f"{self.settings.demo_timeout_s:.0f} s").to_problem()
        except Exception:  # noqa: BLE001
            log.exception("demo %s crashed", demo_id)
            error = ProblemError(500, "demo-crashed", "the demo could not run").to_problem()
        with self.db.write() as s:
            demo = s.get(Demo, demo_id)
            if demo is not None:
                demo.status = "succeeded" if result is not None else "failed"
                demo.result, demo.error, demo.finished_at = result, error, utcnow()

    def get(self, principal: Principal, job_id: str, demo_id: str) -> Demo:
        """Demo ``demo_id`` of job ``job_id``; raises ProblemError 404 ``not-found``."""
        with self.db.read() as s:
            demo = s.get(Demo, demo_id)
        if demo is None or demo.principal_id != principal.id or demo.job_id != job_id:
            raise ProblemError(404, "not-found", f"demo {demo_id} not found")
        return demo

    def stop(self) -> None:
        """Stop the demo pool without waiting; queued demos are dropped."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def to_public(demo: Demo) -> DemoPublic:
    """API view of a demo row, with its ``self`` and ``job`` links."""
    return DemoPublic(
        id=demo.id, job_id=demo.job_id, trial=demo.trial, index=demo.index,
        status=demo.status, result=demo.result, error=demo.error,
        created_at=demo.created_at, finished_at=demo.finished_at,
        links={"self": f"/v1/jobs/{demo.job_id}/demos/{demo.id}",
               "job": f"/v1/jobs/{demo.job_id}"})
