"""Entry point of one job attempt, running in a fresh ``spawn`` process.

The parent passes a JSON-able ``payload``; this process resolves the spec's upload
references to paths, runs the search engine, relays its progress events over the
pipe and ends with exactly one ``("result", {...})`` message. Cancellation is
cooperative (``should_stop`` is polled by the engine every training step); if the parent
process disappears the run stops too, so an orphan can never race the next attempt.

Modes: ``full`` (open + run_trials + finalize, the embedded executor), and for the
scale-out executor ``prepare`` (data, baseline, study), ``trials`` (run trials until the
study-wide total is reached) and ``finalize`` (report + artifacts).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from service.lifeline import die_with_parent

log = logging.getLogger("service.jobrunner")


class _Channel:
    """Thread-safe sender that never raises (the parent may be gone)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.broken = False

    def send(self, kind: str, body: dict[str, Any]) -> None:
        if self.broken:
            return
        with self._lock:
            try:
                self._conn.send((kind, body))
            except (OSError, ValueError, EOFError):
                self.broken = True


def _setup_logging(workdir: Path, attempt: int, mode: str, level: str) -> None:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / f"attempt-{attempt}-{mode}-{os.getpid()}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


def resolve(payload: dict[str, Any]) -> dict[str, Any]:
    """The job's spec with upload references replaced by paths (reads the uploads table)."""
    from sqlalchemy import select

    from service.db import Database, Upload
    from service.specs import UploadRef, referenced_uploads, resolve_spec

    spec = payload["spec"]
    ids = referenced_uploads(spec)
    refs: dict[str, UploadRef] = {}
    if ids:
        db = Database(payload["database_url"], pool_size=1, max_overflow=1)
        try:
            with db.read() as s:
                for r in s.scalars(select(Upload).where(Upload.id.in_(ids),
                                                        Upload.principal_id ==
                                                        payload["principal_id"])):
                    refs[r.id] = UploadRef(r.id, r.kind, r.status, r.format,
                                           Path(payload["uploads_dir"]) / r.path, dict(r.meta))
        finally:
            db.dispose()
    return resolve_spec(spec, refs)


def summarize(report: Any) -> dict[str, Any]:
    """Small JSON summary of a ParetoReport for the job resource."""
    return {
        "points": len(report.points),
        "failures": len(report.failures),
        "baseline": {"relus": report.baseline.relus,
                     "test_accuracy": report.baseline.test_accuracy},
        "front": [{"trial": p.trial, "chain": p.chain, "relus": p.relus,
                   "poly_mults": p.poly_mults,
                   "val_accuracy": p.val_accuracy, "test_accuracy": p.test_accuracy,
                   "mpc_latency_s": p.mpc.latency_s if p.mpc else None,
                   "mpc_bytes_per_party": p.mpc.bytes_per_party if p.mpc else None,
                   "artifact": p.artifact} for p in report.front()],
        "answers": [a.model_dump(mode="json") for a in report.answers],
    }


def run(payload: dict[str, Any], emit: Any, should_stop: Any) -> dict[str, Any]:
    """Run one mode of one attempt; returns the result body (``status`` = succeeded)."""
    from pi_opt.search import SearchConfig, SearchSession

    config = SearchConfig.model_validate(resolve(payload))
    workdir = Path(payload["workdir"])
    mode = payload["mode"]
    session = SearchSession.open(config, workdir=workdir, storage=payload.get("storage"),
                                 progress=emit, should_stop=should_stop)
    out: dict[str, Any] = {"status": "succeeded"}
    if mode in ("full", "trials"):
        out["trials_run"] = session.run_trials(n_trials=config.n_trials,
                                               timeout_s=_trial_timeout(config, payload))
        out["best"] = session.best_so_far()
    if mode in ("full", "finalize"):
        out["summary"] = summarize(session.finalize(measure=_measure(config)))
    return out


def _trial_timeout(config: Any, payload: dict[str, Any]) -> float | None:
    """The spec's ``timeout_s``, cut to what is left of the server's time per job (the
    search stops there and the report is still written)."""
    deadline = payload.get("deadline")
    if deadline is None:
        return config.timeout_s  # type: ignore[no-any-return]
    left = max(1.0, float(deadline) - time.time())
    return min(left, config.timeout_s) if config.timeout_s else left


def _measure(config: Any) -> Any:
    """The MPC measurement callable when the spec asks for one (CrypTen loads lazily)."""
    if config.measure_mpc == "none":
        return None
    from service.problems import ProblemError

    try:
        from mpc.measure import make_measure
    except ImportError as exc:
        raise ProblemError(503, "mpc-unavailable",
                           f"measure_mpc needs the MPC backend, which cannot be loaded: {exc}"
                           ) from None
    return make_measure(config.mpc)


def child_main(payload: dict[str, Any], conn: Connection, stop: Event) -> None:
    """Process target. Never raises: every outcome is a ``result`` message."""
    die_with_parent(payload.get("parent_pid"))
    if payload.get("nice"):
        os.nice(int(payload["nice"]))   # training yields the CPU to the API and the helpers
    channel = _Channel(conn)
    workdir = Path(payload["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    _setup_logging(workdir, payload["attempt"], payload["mode"], payload.get("log_level", "info"))
    extra = {"worker": payload.get("worker"), "pid": os.getpid()}

    def emit(event: dict[str, Any]) -> None:
        if "type" not in event:     # training-loop records: {"phase", "epoch", "epochs", ...}
            event = {"type": "epoch" if "epoch" in event else "log", **event}
        channel.send("event", {**event, **extra} if event["type"] == "trial" else event)

    def should_stop() -> bool:
        return stop.is_set()

    from pydantic import ValidationError

    from pi_opt.errors import Cancelled, PiOptError
    from service.problems import ProblemError, from_pi_opt

    result: dict[str, Any]
    try:
        log.info("attempt %s of job %s: mode %s", payload["attempt"], payload["job_id"],
                 payload["mode"])
        result = run(payload, emit, should_stop)
    except Cancelled:
        result = {"status": "canceled"}
    except PiOptError as exc:
        log.warning("job failed: %s", exc)
        result = {"status": "failed", "error": from_pi_opt(exc).to_problem()}
    except ProblemError as exc:
        result = {"status": "failed", "error": exc.to_problem()}
    except ValidationError as exc:
        result = {"status": "failed", "error": ProblemError(
            422, "invalid-config", f"the job spec is no longer valid: {exc.error_count()} "
            "error(s)", title="Job Failed").to_problem()}
    except BaseException:  # noqa: BLE001 - report every crash, hide the internals
        log.error("unexpected error:\n%s", traceback.format_exc())
        result = {"status": "failed", "error": ProblemError(
            500, "internal-error", "the job hit an unexpected error; the operator's log has "
            f"the traceback (job {payload['job_id']}, attempt {payload['attempt']})",
            title="Job Failed").to_problem()}
    channel.send("result", result)
    conn.close()
