"""Resource identifiers and opaque keyset cursors."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime

from service.problems import ProblemError


def new_id(prefix: str) -> str:
    """``<prefix>_<20 lowercase hex>`` (80 random bits)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def encode_cursor(created_at: datetime, id_: str) -> str:
    """Opaque page cursor (URL-safe base64) for the keyset position (created_at, id)."""
    raw = json.dumps([created_at.isoformat(), id_], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; raises ProblemError 400 ``invalid-cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, id_ = json.loads(raw)
        when = datetime.fromisoformat(ts)
        if when.tzinfo is None or not isinstance(id_, str):
            raise ValueError
        return when, id_
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ProblemError(400, "invalid-cursor", "the cursor is malformed; use next_cursor "
                           "from a previous page") from None
