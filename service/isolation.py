"""Keeps torch out of the API process.

Checks that need ``pi_opt``'s models (full spec validation, data-set format detection
and archive extraction, model specs against weights) run in a small pool of ``spawn``
helper processes. The API process stays light, never holds the GIL for them, and
survives a crash in them (the pool is rebuilt; the request gets a 503 problem).
Helpers exit on their own when the API process dies (``service.lifeline``).
Helpers answer ``("ok", value)`` or ``("problem", problem_dict)``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from pydantic import ValidationError

from pi_opt.errors import PiOptError
from service.lifeline import die_with_parent
from service.problems import ProblemError, from_pi_opt, from_validation

log = logging.getLogger("service.isolation")
T = TypeVar("T")


def run_checked(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """Helper-side wrapper: expected failures come back as problem documents."""
    try:
        return "ok", fn(*args)
    except ProblemError as exc:
        return "problem", exc.to_problem()
    except PiOptError as exc:
        return "problem", from_pi_opt(exc).to_problem()
    except ValidationError as exc:
        return "problem", from_validation(exc).to_problem()


def _init_helper(parent_pid: int) -> None:
    """Helper-process initializer: exit with the API process, run torch on one thread, and
    import the engine before taking any request (so no submission pays a cold helper).

    A helper's work is a few tiny tensor ops (meta-device builds, one-sample traces);
    torch's default thread pool (one OpenMP thread per core, spinning between ops) made
    each validation cost ~15x the CPU (869 vs 57 ms per submission measured on 2 cores),
    taken from the API and the training job.
    """
    die_with_parent(parent_pid)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    from service.specs import warm_up

    warm_up()
    sys.modules["torch"].set_num_threads(1)


def _ready() -> bool:
    return True


class Helpers:
    """A lazily (re)built spawn process pool; ``call`` runs ``fn(*args)`` in it."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers,
                                                 mp_context=mp.get_context("spawn"),
                                                 initializer=_init_helper,
                                                 initargs=(os.getpid(),))
            return self._pool

    def _reset(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``fn(*args)`` in a helper process; ``timeout`` in seconds.

            Raises ProblemError 503 ``helper-crashed`` / ``helper-timeout``, or ``fn``'s problem.
        """
        pool = self._get()
        try:
            status, value = pool.submit(run_checked, fn, *args).result(timeout)
        except BrokenProcessPool:
            log.error("a helper process died; rebuilding the pool")
            self._reset(pool)
            raise ProblemError(503, "helper-crashed", "a validation helper crashed; retry the "
                               "request", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise ProblemError(503, "helper-timeout", "validation took too long; retry later",
                               headers={"Retry-After": "5"}) from None
        if status == "problem":
            raise ProblemError.from_problem(value)
        return value  # type: ignore[no-any-return]

    def warm_up(self) -> None:
        """Start every helper now (each imports the engine in its initializer), in the
        background; a pool only starts a process per submitted call, so one call per
        helper is submitted at once."""
        def _go() -> None:
            try:
                pool = self._get()
                futures = [pool.submit(_ready) for _ in range(self.workers)]
                for f in futures:
                    f.result(timeout=300)
            except Exception:  # noqa: BLE001 - the first real call reports problems
                log.exception("helper warm-up failed")

        threading.Thread(target=_go, name="pi-opt-helpers-warm-up", daemon=True).start()

    def shutdown(self) -> None:
        """Shut the helper pool down without waiting."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
