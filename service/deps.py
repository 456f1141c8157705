"""Typed dependency aliases (route signatures read like prose).

The dependencies are ``async`` and do no blocking work, so FastAPI runs them on the event
loop instead of hopping to its thread pool once per dependency; only an API key missing
from the principal cache is looked up in a worker thread.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import Principal, PrincipalCache, authenticate
from service.db import Database
from service.demos import DemoRunner
from service.executor.base import Executor
from service.isolation import Helpers
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, bearerFormat="pio_<key>",
                     description="API key created on first start or with `pi-opt keys create`")


async def get_settings(request: Request) -> Settings:
    """Dependency: the app's :class:`~service.settings.Settings`."""
    return cast(Settings, request.app.state.settings)


async def get_db(request: Request) -> Database:
    """Dependency: the app's :class:`~service.db.Database`."""
    return cast(Database, request.app.state.db)


async def get_executor(request: Request) -> Executor:
    """Dependency: the app's job executor."""
    return cast(Executor, request.app.state.executor)


async def get_helpers(request: Request) -> Helpers:
    """Dependency: the app's validation helper processes."""
    return cast(Helpers, request.app.state.helpers)


async def get_demos(request: Request) -> DemoRunner:
    """Dependency: the app's demo runner."""
    return cast(DemoRunner, request.app.state.demos)


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_principal_cache(request: Request) -> PrincipalCache:
    """The app's cache of recently authenticated keys (``Settings.auth_cache_s``)."""
    return cast(PrincipalCache, request.app.state.principals)


async def get_principal(request: Request, credentials: BearerDep) -> Principal:
    """Dependency: the principal of the bearer API key; raises a 401 problem."""
    cache = get_principal_cache(request)
    if credentials is not None:
        cached = cache.get(credentials.credentials)
        if cached is not None:
            return cached
    return await run_in_threadpool(authenticate, request.app.state.db, credentials, cache)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]
HelpersDep = Annotated[Helpers, Depends(get_helpers)]
DemosDep = Annotated[DemoRunner, Depends(get_demos)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
