"""Fast in-process checks: migrations vs models, committed OpenAPI, small helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import REPO
from sqlalchemy import inspect

from service.db import Base, Database
from service.db.migrate import include_name, upgrade_head
from service.ids import decode_cursor, encode_cursor
from service.problems import ProblemError
from service.uploads import expected_sha256


def test_sqlite_migrations_create_the_models_schema(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade_head(db)
    upgrade_head(db)  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True,
                                                                  "include_name": include_name}),
                                Base.metadata)
        assert diff == [], f"models and migrations differ; add a migration: {diff}"
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"
    assert set(Base.metadata.tables) <= set(inspect(db.engine).get_table_names())
    db.dispose()


def test_committed_openapi_is_current() -> None:
    from service.cli import openapi_document

    committed = (REPO / "service" / "openapi.json").read_text()
    assert json.loads(committed) == json.loads(openapi_document()), (
        "service/openapi.json is out of date; regenerate it with "
        "`python -m service openapi --out service/openapi.json`")


def test_cursor_round_trip_and_garbage() -> None:
    from service.db import utcnow

    now = utcnow()
    assert decode_cursor(encode_cursor(now, "job_x")) == (now, "job_x")
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor(now, "x")[:-3]):
        with pytest.raises(ProblemError):
            decode_cursor(bad)


def test_checksum_headers() -> None:
    hexd = "ab" * 32
    import base64

    b64 = base64.b64encode(bytes.fromhex(hexd)).decode()
    assert expected_sha256({"x-checksum-sha256": hexd.upper()}) == hexd
    assert expected_sha256({"x-checksum-sha256": b64}) == hexd
    assert expected_sha256({"repr-digest": f"sha-512=:AAAA:, sha-256=:{b64}:"}) == hexd
    assert expected_sha256({"digest": f"SHA-256={b64}"}) == hexd
    assert expected_sha256({}) is None
    with pytest.raises(ProblemError):
        expected_sha256({"digest": "sha-256=AAAA"})


def test_principal_cache_ttl_key_expiry_and_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    import service.auth as auth
    from service.auth import Principal, PrincipalCache
    from service.db import utcnow

    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    alice, bob = Principal("key_a", "alice"), Principal("key_b", "bob")
    cache = PrincipalCache(ttl_s=5.0, max_entries=2)
    assert cache.get("pio_a") is None
    cache.put("pio_a", alice, None)
    cache.put("pio_b", bob, utcnow() + timedelta(seconds=1))    # the key expires first
    assert cache.get("pio_a") == alice and cache.get("pio_b") == bob
    clock[0] += 1.5
    assert cache.get("pio_b") is None and cache.get("pio_a") == alice
    clock[0] += 4.0
    assert cache.get("pio_a") is None                             # ttl over: read the db again
    for i in range(3):                                            # bounded: oldest dropped
        cache.put(f"pio_{i}", alice, None)
    assert cache.get("pio_0") is None and cache.get("pio_2") == alice
    assert all("pio_" not in k for k in cache._entries)           # only digests are kept
    off = PrincipalCache(ttl_s=0)
    off.put("pio_a", alice, None)
    assert off.get("pio_a") is None
