"""Executors: embedded (``local``) and scale-out (``procrastinate``)."""

from __future__ import annotations

from service.db import Database
from service.executor.base import Attempt, Executor
from service.settings import Settings

__all__ = ["Attempt", "Executor", "make_executor"]


def make_executor(settings: Settings, db: Database) -> Executor:
    """The API-side executor for ``settings.executor``."""
    if settings.executor == "procrastinate":
        from service.executor.procrastinate_exec import ProcrastinateExecutor

        return ProcrastinateExecutor(settings, db)
    from service.executor.local import LocalExecutor

    return LocalExecutor(settings, db, run_supervisor=settings.embedded_worker)
