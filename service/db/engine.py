"""Engine and session setup.

SQLite recipe (embedded mode): WAL journal so readers never block the writer,
``busy_timeout`` so concurrent writers wait instead of failing, and pysqlite's own
transaction handling disabled so that SQLAlchemy emits ``BEGIN`` itself: plain
``BEGIN`` for read sessions and ``BEGIN IMMEDIATE`` for write sessions (the write lock
is taken up front, so read-then-write transactions cannot deadlock into
"database is locked"). PostgreSQL uses row locks (``FOR UPDATE [SKIP LOCKED]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_IMMEDIATE = "pi_opt_begin_immediate"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the SQLite recipe applied when ``url`` is SQLite."""
    if not url.startswith("sqlite"):
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        return create_engine(url, **kwargs)
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 40)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None          # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Engine plus read / write session factories (``with db.write() as s: ...`` commits)."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(**{_IMMEDIATE: True}),
                                   expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        """True when the engine is PostgreSQL (else SQLite)."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads (no transaction is committed)."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session inside one transaction: committed on exit, rolled back on an exception."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection of the engine."""
        self.engine.dispose()
