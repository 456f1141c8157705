"""Bearer API keys (``pio_<random>``). Keys are principals; only SHA-256 digests are stored.

Every resource belongs to the key that created it and is invisible (404) to others.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime

from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import func, select

from service.db import ApiKey, Database, utcnow
from service.ids import new_id
from service.problems import ProblemError

PREFIX = "pio_"


@dataclass(frozen=True)
class Principal:
    """The owner of an API key: every job, upload and demo belongs to one ``id``."""
    id: str
    name: str


def hash_key(secret: str) -> str:
    """Hex SHA-256 of an API key secret (only the hash is stored)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(db: Database, name: str, *, expires_at: datetime | None = None
                   ) -> tuple[Principal, str]:
    """Create a key (valid until ``expires_at``, a UTC datetime, when given); returns the
    principal and the secret (shown once, never stored)."""
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), name=name, key_hash=hash_key(secret), prefix=secret[:12],
                 expires_at=expires_at)
    with db.write() as s:
        s.add(row)
    return Principal(row.id, name), secret


def revoke_api_key(db: Database, key_id: str) -> bool:
    """Revoke key ``key_id``; False when it does not exist or was already revoked."""
    with db.write() as s:
        row = s.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        return True


def list_api_keys(db: Database) -> list[ApiKey]:
    """Every API key row (revoked and expired included), oldest first."""
    with db.read() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def bootstrap_key(db: Database) -> str | None:
    """First start of an embedded server: create a ``default`` key and print it once."""
    with db.read() as s:
        if s.scalar(select(func.count()).select_from(ApiKey)):
            return None
    _, secret = create_api_key(db, "default")
    print(f"pi-opt: created API key 'default': {secret}\n"
          "pi-opt: store it now (only its SHA-256 is kept); send it as "
          "'Authorization: Bearer <key>'", file=sys.stderr, flush=True)
    return secret


def authenticate(db: Database, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """Principal for a bearer credential, or a 401 problem."""
    unauthorized = {"WWW-Authenticate": 'Bearer realm="pi-opt"'}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ProblemError(401, "unauthorized", "send an API key as 'Authorization: Bearer "
                           "pio_...'", headers=unauthorized)
    token = credentials.credentials
    if not token.startswith(PREFIX):
        raise ProblemError(401, "unauthorized", "invalid API key", headers=unauthorized)
    with db.read() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
    if row is not None and row.expires_at is not None and row.expires_at <= utcnow():
        raise ProblemError(401, "unauthorized", "this API key has expired",
                           headers={"WWW-Authenticate": 'Bearer realm="pi-opt", '
                                    'error="invalid_token"'})
    if row is None or row.revoked_at is not None:
        raise ProblemError(401, "unauthorized", "invalid API key",
                           headers={"WWW-Authenticate": 'Bearer realm="pi-opt", '
                                    'error="invalid_token"'})
    return Principal(row.id, row.name)
