"""API tokens: random, prefixed `mlg_`, stored only as their SHA-256, shown once."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "mlg_"  # noqa: S105 (a prefix, not a secret)
TOKEN_BYTES = 32  # 256 bits of entropy: a plain SHA-256 is enough, no slow hash needed
DISPLAY_CHARS = 12


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """Enough of a token to tell it apart in a list, too little to use it."""
    return token[:DISPLAY_CHARS]
