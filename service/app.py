"""Application factory: ``create_app(settings)``.

Startup applies the migrations, removes partial uploads left by a crash, creates (and
prints) an API key on first start, starts the executor (which re-queues jobs orphaned by
a crashed server at once) and warms up the helper processes that validate specs (the
API process itself never imports torch).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import openapi, problems
from service.auth import PrincipalCache, bootstrap_key
from service.db import Database
from service.db.migrate import upgrade_head
from service.demos import DemoRunner
from service.executor import make_executor
from service.isolation import Helpers
from service.routes import artifacts, demo, health, jobs, plans, uploads
from service.settings import Settings
from service.uploads import sweep_partial_uploads

log = logging.getLogger("service")


def prepare_database(settings: Settings) -> Database:
    """Create the data directories and bring the schema(s) up to date."""
    for d in (settings.data_dir, settings.jobs_dir, settings.uploads_dir):
        d.mkdir(parents=True, exist_ok=True)
    db = Database(settings.url)
    upgrade_head(db)
    if settings.executor == "procrastinate":
        from service.executor.procrastinate_exec import ensure_queue_schema

        ensure_queue_schema(db)
    return db


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI application for ``settings`` (default: from the environment).

        Its lifespan prepares the database (migrations), removes partial uploads left by a crash,
        starts the executor, demo runner and validation helpers, and stops them on shutdown.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = prepare_database(settings)
        removed = sweep_partial_uploads(db, settings)
        if removed:
            log.warning("removed %d partial upload(s) left by a crash", len(removed))
        if settings.bootstrap_key:
            bootstrap_key(db)
        executor = make_executor(settings, db)
        demos = DemoRunner(settings, db)
        demos.recover()
        helpers = Helpers(settings.helper_processes)
        app.state.db, app.state.executor, app.state.demos = db, executor, demos
        app.state.helpers = helpers
        helpers.warm_up()
        executor.start()
        try:
            yield
        finally:
            executor.stop()
            demos.stop()
            helpers.shutdown()
            db.dispose()

    app = FastAPI(
        title="pi-opt",
        summary="ReLU-budget optimization jobs for private inference",
        version="1",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.principals = PrincipalCache(settings.auth_cache_s)
    problems.install(app)
    for module in (jobs, plans, uploads, artifacts, demo, health):
        app.include_router(module.router)
    openapi.install(app)
    return app
