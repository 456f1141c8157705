"""Apply the Alembic migrations programmatically (``alembic upgrade head``) at startup.

API and workers may start together, so the upgrade runs under a lock: a PostgreSQL
advisory lock, or an exclusive file lock next to the SQLite database.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from service.db.engine import Database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_PG_LOCK_ID = 0x70696F70  # "piop"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate filter: procrastinate's tables (scale-out mode) are not ours."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


def alembic_config(url: str) -> Config:
    """Alembic configuration of our migrations for the database at ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@contextmanager
def migration_lock(db: Database) -> Iterator[Connection]:
    """A connection holding the cluster-wide migration lock."""
    if db.is_postgres:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_ID})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_ID})
                conn.commit()
        return
    db_path = db.engine.url.database
    lock_path = Path(db_path + ".migrate.lock") if db_path else None
    if lock_path is None:  # in-memory database: nothing to race with
        with db.engine.connect() as conn:
            yield conn
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            with db.engine.connect() as conn:
                yield conn
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade_head(db: Database) -> None:
    """Bring the schema of ``db`` to the newest revision."""
    cfg = alembic_config(db.url)
    with migration_lock(db) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
