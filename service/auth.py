"""Bearer API keys (``pio_<random>``). Keys are principals; only SHA-256 digests are stored.

Every resource belongs to the key that created it and is invisible (404) to others.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import threading
import time
from collections import OrderedDict
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


class PrincipalCache:
    """Principals of recently authenticated keys, so a polling client does not cost a
    database read per request: an entry lives ``ttl_s`` seconds (never past the key's own
    expiry), at most ``max_entries`` entries (least recently used dropped first).

    Keyed by the SHA-256 of the key, so no secret is kept in memory. A key revoked by
    another process (``pi-opt keys revoke``) is refused at most ``ttl_s`` seconds later;
    ``ttl_s=0`` disables the cache. Failed authentications are never cached. Thread-safe.
    """

    def __init__(self, ttl_s: float, max_entries: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        """The cached principal of ``token`` (a full ``pio_...`` secret), or None."""
        if self.ttl_s <= 0:
            return None
        digest = hash_key(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[1]

    def put(self, token: str, principal: Principal, key_expires_at: datetime | None) -> None:
        """Remember ``principal`` for ``token`` until ``ttl_s`` from now or the key's
        expiry (a UTC datetime), whichever comes first."""
        if self.ttl_s <= 0:
            return
        until = time.monotonic() + self.ttl_s
        if key_expires_at is not None:
            until = min(until, time.monotonic() + (key_expires_at - utcnow()).total_seconds())
        digest = hash_key(token)
        with self._lock:
            self._entries[digest] = (until, principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


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


def authenticate(db: Database, credentials: HTTPAuthorizationCredentials | None,
                 cache: PrincipalCache | None = None) -> Principal:
    """Principal for a bearer credential, read from the database, or a 401 problem; a
    successful lookup is stored in ``cache`` (the caller checks the cache first)."""
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
    principal = Principal(row.id, row.name)
    if cache is not None:
        cache.put(token, principal, row.expires_at)
    return principal
