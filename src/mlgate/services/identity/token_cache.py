"""Principals by token, kept for a moment, so the hot paths (the MLflow door, every API call) do not read
the control database on each request.

Every write of identity in this process (a token issued or revoked, roles granted or taken, a job's
tokens revoked at its end) empties the cache, so a revocation holds from the next request on. A write by
another process on the same database (a second server) is seen within `TTL_S`. An entry's expiry is
checked on every use. Only successful lookups are kept: an unknown token always reaches the database.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from mlgate.adapters.sql.models import utcnow
from mlgate.domain.permissions import Principal

TTL_S = 2.0
MAX_ENTRIES = 10_000  # each entry is a token in use: far more than a team has


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires_at: datetime | None  # the token's own expiry
    kept_until: float  # monotonic


class TokenCache:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def get(self, database: str, token_hash: str) -> Principal | None:
        entry = self._entries.get((database, token_hash))
        if entry is None or entry.kept_until < time.monotonic():
            return None
        if entry.expires_at is not None and entry.expires_at <= utcnow():
            return None
        return entry.principal

    def put(self, database: str, token_hash: str, principal: Principal, expires_at: datetime | None) -> None:
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[(database, token_hash)] = _Entry(principal, expires_at, time.monotonic() + self._ttl_s)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


TOKENS = TokenCache()
