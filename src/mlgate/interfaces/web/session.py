"""Web sessions: the signed cookie that stands for a signed-in token, and the CSRF token each form carries.

Signing in exchanges an API token for a session cookie. The cookie is signed (HMAC, itsdangerous) with a
per-home secret kept in `<home>/web-secret` (0600, made on first use) and holds the token's id, the
user's name and a random CSRF token: never the token itself. Every request looks the token up again by
id, so a revoked or expired token, or a disabled user, ends the session at once. A visitor who is not
signed in gets a cookie with a CSRF token only, so the sign-in form is protected like every other.
Signing out records the session as ended, so a copy of its cookie is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from mlgate.adapters.sql.database import Database
from mlgate.domain.permissions import Principal
from mlgate.errors import AuthenticationError
from mlgate.services.identity import accounts

COOKIE = "mlgate_session"
SECRET_FILE = "web-secret"  # noqa: S105 (the file's name, not a secret)
SALT = "mlgate-web-session"
MAX_AGE_S = 12 * 3600  # a working day; signing in again takes one paste of the token


@dataclass(frozen=True)
class Session:
    """What the cookie says: a CSRF token always, the signed-in token's id and user once signed in."""

    csrf: str
    token_id: int | None = None
    user: str | None = None

    @property
    def key(self) -> str:
        """What names the session once it is signed out (its CSRF token is new with each sign-in)."""
        return hashlib.sha256(self.csrf.encode()).hexdigest()

    def as_json(self) -> dict[str, Any]:
        return {"csrf": self.csrf, "tid": self.token_id, "user": self.user}


def new_session(*, token_id: int | None = None, user: str | None = None) -> Session:
    return Session(csrf=secrets.token_urlsafe(24), token_id=token_id, user=user)


def secret_key(home: Path) -> bytes:
    """The home's signing secret, created on first use, readable by its owner only."""
    path = home / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another request made it first: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return bytes.fromhex(value)


class Signer:
    """Dumps and loads session cookies with the home's secret."""

    def __init__(self, home: Path) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key(home), salt=SALT)

    def dump(self, session: Session) -> str:
        return self._serializer.dumps(session.as_json())

    def load(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, or None if it is missing, forged, malformed or too old."""
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=MAX_AGE_S)
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        tid, user = data.get("tid"), data.get("user")
        if not (isinstance(tid, int) and isinstance(user, str)):
            tid, user = None, None
        return Session(csrf=data["csrf"], token_id=tid, user=user)


def end(db: Database, session: Session | None) -> None:
    """Sign a session out for good: its cookie is refused from now on, wherever a copy of it is."""
    if session is not None and session.user is not None:
        accounts.end_session(db, session.key, user=session.user, forget_after=timedelta(seconds=MAX_AGE_S))


def csrf_matches(session: Session | None, sent: str | None) -> bool:
    return session is not None and bool(sent) and hmac.compare_digest(session.csrf, sent or "")


def principal_of_session(db: Database, session: Session) -> Principal | None:
    """The signed-in person, checked against the token's row as a bearer token is: None if the token was
    revoked, has expired, is a job's, or its user may no longer sign in, or if the session was signed out
    (a copy of its cookie kept elsewhere)."""
    if session.token_id is None or session.user is None:
        return None
    try:
        return accounts.authenticate_session(db, session.token_id, user=session.user, session_hash=session.key)
    except AuthenticationError:
        return None
