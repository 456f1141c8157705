"""Scale-out on PostgreSQL: migrations, and two procrastinate workers sharing one job.

Skipped unless ``PI_OPT_TEST_PG_DSN`` (``postgresql://`` or ``postgresql+psycopg://``
``postgres@127.0.0.1:5433/postgres``) points at a server where the tests may create and
drop databases.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import service_env
from sqlalchemy import text
from test_service_jobs import EventLog, client, job_spec, wait_for

from service.db.migrate import include_name

_RAW_DSN = os.environ.get("PI_OPT_TEST_PG_DSN")
#: libpq form (``postgresql://``); the variable may also carry the SQLAlchemy driver suffix
DSN = "postgresql://" + _RAW_DSN.split("://", 1)[1] if _RAW_DSN else None
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not DSN, reason="PI_OPT_TEST_PG_DSN is not set")]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards."""
    import psycopg

    assert DSN is not None
    name = f"pi_opt_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = DSN.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_migrations_and_queue_schema(pg_url: str, tmp_path: Path) -> None:
    from service.app import prepare_database
    from service.db import Base
    from service.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=pg_url, executor="procrastinate")
    db = prepare_database(settings)
    prepare_database(settings).dispose()      # idempotent, and safe to run twice
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True,
                                                                  "include_name": include_name}),
                                Base.metadata)
        assert diff == [], diff
        assert conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
    db.dispose()


def test_two_workers_cooperate_on_one_study(pg_url: str, spawn: Any, tmp_path: Path) -> None:
    """Two workers share one job's trials; a worker SIGKILLed during ``prepare`` is
    recovered (stalled queue job retried, our row taken over; the attempt count is unchanged)."""
    import psycopg

    from service.app import prepare_database
    from service.auth import create_api_key
    from service.settings import Settings

    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=pg_url, executor="procrastinate")
    db = prepare_database(settings)
    _, key = create_api_key(db, "pg")
    db.dispose()
    env = service_env(data_dir, PI_OPT_DATABASE_URL=pg_url, PI_OPT_EXECUTOR="procrastinate",
                      PI_OPT_FANOUT="2")
    server = spawn.server(env)
    workers = {p.pid: p for p in (spawn.proc(env, "-m", "service", "worker", name="worker-a"),
                                  spawn.proc(env, "-m", "service", "worker", name="worker-b"))}
    c = client(server, key)
    r = c.post("/v1/jobs", json={"spec": job_spec(6, [0.15, 0.3, 0.45, 0.6, 0.75, 0.9])})
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    log = EventLog(c, jid)

    # SIGKILL the worker that claimed `prepare`, start a replacement
    started = wait_for(lambda: [e["data"] for e in log.poll() if e["type"] == "task"], 60,
                       "prepare to start")
    victim = int(started[0]["worker"].split(":")[1])
    assert started[0]["task"] == "prepare" and victim in workers
    os.kill(victim, signal.SIGKILL)
    spawn.proc(env, "-m", "service", "worker", name="worker-c")

    job = wait_for(lambda: (j := c.get(f"/v1/jobs/{jid}").json())["status"] in
                   ("succeeded", "failed", "canceled") and j, 400, "the job to finish")
    assert job["status"] == "succeeded", job
    assert job["attempt"] == 1  # a worker crash is not the job's fault: no attempt used
    log.poll()
    requeued = [e["data"] for e in log.events if e["type"] == "requeued"]
    assert requeued and requeued[0]["task"] == "prepare", requeued
    trial_workers = {e["data"]["worker"] for e in log.events
                     if e["type"] == "trial" and e["data"]["state"] == "complete"}
    assert len(trial_workers) == 2, f"trials ran on {trial_workers}"
    assert all(int(w.split(":")[1]) != victim for w in trial_workers)
    started = [e["data"] for e in log.events if e["type"] == "task"]
    assert [t["task"] for t in started].count("prepare") == 2
    assert [t["task"] for t in started].count("trials") == 2
    assert [t["task"] for t in started].count("finalize") == 1

    libpq = "postgresql://" + pg_url.split("://", 1)[1]
    with psycopg.connect(libpq) as conn:
        rows = conn.execute("SELECT kind, shard, state, tries FROM job_tasks WHERE job_id = %s "
                            "ORDER BY id", (jid,)).fetchall()
        assert rows == [("prepare", 0, "done", 2), ("trials", 0, "done", 1),
                        ("trials", 1, "done", 1), ("finalize", 0, "done", 1)]
        schema = f"optuna_{jid}"
        n_complete = conn.execute(
            f'SELECT count(*) FROM "{schema}".trials WHERE state = %s', ("COMPLETE",)
        ).fetchone()[0]
        optuna_workers = {v for (v,) in conn.execute(
            f'SELECT value_json FROM "{schema}".trial_user_attributes WHERE key = %s',
            ("worker",))}
    assert n_complete >= 6
    assert len(optuna_workers) == 2, optuna_workers
    report = c.get(f"/v1/jobs/{jid}/artifacts/report/pareto.json").json()
    assert len([p for p in report["points"] if p.get("harvested_from") is None]) >= 6

    assert c.delete(f"/v1/jobs/{jid}").status_code == 204
    with psycopg.connect(libpq) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone()[0] is None
