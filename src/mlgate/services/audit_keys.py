"""The audit log's two keys, kept in `<home>/secrets/` (0700; files 0600), never in the database.

- `audit-mac.key`: 32 random bytes (hex) keying each event's MAC (`domain.audit.event_mac`);
- `audit-signing.key`: an Ed25519 private key (PKCS#8 PEM) signing the chain's checkpoints.

Only the server's user reads them: no sandbox mounts the home's `secrets` folder, and jobs, checks and
serving hosts run in sandboxes. Both are made on first use; `load_or_create` says whether they were
just made, so that the events already recorded (a home from before the keys) are sealed once, then and
never again: a MAC-less event that appears later was written by someone without the key.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlgate.private_home import PRIVATE_FOLDER_MODE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SECRETS_DIR = "secrets"
MAC_KEY_FILE = "audit-mac.key"
SIGNING_KEY_FILE = "audit-signing.key"


@dataclass(frozen=True)
class AuditKeys:
    mac_key: bytes
    signing_pem: bytes
    created: bool  # the MAC key did not exist before this call

    def signing_key(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(self.signing_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the audit signing key is not an Ed25519 key")
        return key

    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key().public_key()

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def secrets_dir(home: Path) -> Path:
    return home / SECRETS_DIR


def _new_signing_pem() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _read_or_make(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The file's bytes, written first (0600, exclusively: a concurrent maker's file wins) if missing."""
    try:
        return path.read_bytes(), False
    except FileNotFoundError:
        pass
    value = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes(), False
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)
    return value, True


def load_or_create(home: Path) -> AuditKeys:
    folder = secrets_dir(home)
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)  # a loosened one: `mlgate init` tightens
    mac_hex, created = _read_or_make(folder / MAC_KEY_FILE, lambda: secrets.token_hex(32).encode())
    signing_pem, _ = _read_or_make(folder / SIGNING_KEY_FILE, _new_signing_pem)
    return AuditKeys(mac_key=bytes.fromhex(mac_hex.decode().strip()), signing_pem=signing_pem, created=created)
