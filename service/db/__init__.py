"""Persistence: typed models, engine setup and migrations."""

from service.db.engine import Database, make_engine
from service.db.models import (
    ACTIVE,
    TERMINAL,
    ApiKey,
    Base,
    Demo,
    IdempotencyKey,
    Job,
    JobEvent,
    JobTask,
    Upload,
    utcnow,
)

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "ApiKey",
    "Base",
    "Database",
    "Demo",
    "IdempotencyKey",
    "Job",
    "JobEvent",
    "JobTask",
    "Upload",
    "make_engine",
    "utcnow",
]
