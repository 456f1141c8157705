"""/v1/health: liveness + database reachability (details only with a key)."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from sqlalchemy import text

from service.db import utcnow
from service.auth import authenticate
from service.deps import BearerDep, DbDep, SettingsDep
from service.problems import ProblemError
from service.routes.jobs import PROBLEM
from service.schemas import Health

router = APIRouter(prefix="/v1", tags=["health"])


@functools.cache
def _version() -> str:
    try:
        return version("pi-opt")
    except PackageNotFoundError:
        return "0+unknown"


@router.get("/health", responses={503: PROBLEM}, response_model_exclude_none=True,
            openapi_extra={"security": [{}, {"HTTPBearer": []}]})   # the key is optional
def health(db: DbDep, settings: SettingsDep, credentials: BearerDep) -> Health:
    """Liveness (no key needed). With a valid API key also the version, executor and
    database kind; without one nothing about the deployment is revealed."""
    try:
        with db.read() as s:
            s.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001
        raise ProblemError(503, "database-unavailable", "the database is unreachable") from None
    try:
        authenticate(db, credentials)
    except ProblemError:
        return Health(status="ok")
    return Health(status="ok", version=_version(), executor=settings.executor,
                  database=db.engine.dialect.name, time=utcnow())
