"""Keyset pagination on ``(created_at, id)``, newest first, with opaque cursors."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, or_

from service.db.engine import Database
from service.ids import decode_cursor, encode_cursor



def keyset_page(db: Database, query: Select[Any], model: Any, *, limit: int,
                cursor: str | None) -> tuple[list[Any], str | None]:
    """Run ``query`` (already filtered) one page at a time; returns ``(rows, next_cursor)``."""
    if cursor:
        when, last = decode_cursor(cursor)
        query = query.where(or_(model.created_at < when,
                                and_(model.created_at == when, model.id < last)))
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    with db.read() as s:
        rows = list(s.scalars(query))
    nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) \
        if len(rows) > limit else None
    return rows[:limit], nxt
