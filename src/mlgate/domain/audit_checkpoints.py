"""Signed checkpoints of the audit chain's head, and what they prove about a log.

A checkpoint says "event `seq` had hash `hash` at time `at`", signed with the server's Ed25519 key.
Checkpoints are written outside the database (an append-only file, a webhook), so that a process that
rewrites the whole event table, rehashes it and moves the head still contradicts every checkpoint
taken before: the signature cannot be made without the key, and the hashes it vouches for are gone.

One checkpoint is one JSON line: `{"seq", "hash", "at", "key_id", "signature"}`; the signature covers
the canonical JSON of `["mlgate-audit-checkpoint-v1", seq, hash, at]`. `key_id` is the first 16 hex
digits of the SHA-256 of the public key's raw bytes, so that a key rotation is visible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_LINE = 1024  # a checkpoint line is about 250 bytes


class MalformedCheckpoint(ValueError):
    """A line that is not a checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    key_id: str
    signature: str

    def line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass(frozen=True)
class Contradiction:
    """The first checkpoint a log fails, and why; `seq` is the event the checkpoint vouches for."""

    checkpoint: int  # 1-based position in the checkpoint list
    seq: int
    reason: str


def _message(seq: int, event_hash: str, at: str) -> bytes:
    return json.dumps(["mlgate-audit-checkpoint-v1", seq, event_hash, at], separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(private_key: Ed25519PrivateKey, *, seq: int, event_hash: str, at: str) -> Checkpoint:
    signature = private_key.sign(_message(seq, event_hash, at))
    return Checkpoint(
        seq=seq,
        hash=event_hash,
        at=at,
        key_id=key_id(private_key.public_key()),
        signature=base64.b64encode(signature).decode(),
    )


def signature_holds(public_key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, _message(checkpoint.seq, checkpoint.hash, checkpoint.at))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def parse_line(line: str) -> Checkpoint:
    """One checkpoint from its JSON line; `MalformedCheckpoint` naming what is wrong otherwise."""
    if len(line) > MAX_LINE:
        raise MalformedCheckpoint(f"a checkpoint line is at most {MAX_LINE} characters")
    try:
        value: Any = json.loads(line)
    except ValueError as exc:
        raise MalformedCheckpoint(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or set(value) != {"seq", "hash", "at", "key_id", "signature"}:
        raise MalformedCheckpoint("expected an object with exactly seq, hash, at, key_id and signature")
    if not isinstance(value["seq"], int) or isinstance(value["seq"], bool) or value["seq"] < 1:
        raise MalformedCheckpoint("seq must be a positive integer")
    if not all(isinstance(value[k], str) for k in ("hash", "at", "key_id", "signature")):
        raise MalformedCheckpoint("hash, at, key_id and signature must be strings")
    return Checkpoint(**value)


def parse_lines(lines: Iterable[str]) -> list[Checkpoint]:
    """Every checkpoint of a sink, in order; blank lines are skipped, a malformed one names its line."""
    found: list[Checkpoint] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            found.append(parse_line(line.strip()))
        except MalformedCheckpoint as exc:
            raise MalformedCheckpoint(f"checkpoint line {number}: {exc}") from None
    return found


def first_contradiction(
    checkpoints: Iterable[Checkpoint], *, hashes: Mapping[int, str], public_key: Ed25519PublicKey
) -> Contradiction | None:
    """The first checkpoint that is forged or that the log's events contradict (`hashes`: seq -> hash
    of the events as they are now, after the chain itself was found whole)."""
    last_seq = max(hashes, default=0)
    for position, checkpoint in enumerate(checkpoints, start=1):
        if not signature_holds(public_key, checkpoint):
            return Contradiction(position, checkpoint.seq, "its signature does not hold: it was not made with the key")
        if checkpoint.seq > last_seq:
            reason = f"it vouches for event {checkpoint.seq} but the log ends at {last_seq}: events were deleted"
            return Contradiction(position, checkpoint.seq, reason)
        if hashes[checkpoint.seq] != checkpoint.hash:
            reason = f"event {checkpoint.seq} no longer has the hash it had: the chain was rewritten"
            return Contradiction(position, checkpoint.seq, reason)
    return None
