"""The audit log's hash chain: each event's hash covers all its columns and the previous hash.

The chain's head (last sequence number and hash) is kept apart from the events, so that deleting the
last event, which leaves a valid shorter chain, is detected too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class ChainedEvent:
    seq: int
    at: datetime
    actor: str
    action: str
    environment: str | None
    subject: str | None
    payload_digest: str
    prev_hash: str
    hash: str


def canonical_time(at: datetime) -> str:
    """One spelling of a time whatever the database returns (naive UTC on SQLite, aware on PostgreSQL)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def payload_digest(payload: Any) -> str:
    """SHA-256 of the payload's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def event_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    environment: str | None,
    subject: str | None,
    payload_digest: str,
    prev_hash: str,
) -> str:
    fields = [seq, canonical_time(at), actor, action, environment, subject, payload_digest, prev_hash]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    broken_seq: int | None = None
    reason: str | None = None


def verify_chain(events: Iterable[ChainedEvent], *, head_seq: int, head_hash: str) -> VerifyResult:
    """Walk the events in sequence order; report the first one that breaks the chain."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for event in events:
        count += 1
        if event.seq != expected_seq:
            return VerifyResult(False, count, expected_seq, f"event {expected_seq} is missing (found {event.seq} next)")
        if event.prev_hash != prev_hash:
            return VerifyResult(False, count, event.seq, "its link to the previous event does not match")
        recomputed = event_hash(
            seq=event.seq,
            at=event.at,
            actor=event.actor,
            action=event.action,
            environment=event.environment,
            subject=event.subject,
            payload_digest=event.payload_digest,
            prev_hash=event.prev_hash,
        )
        if recomputed != event.hash:
            return VerifyResult(False, count, event.seq, "its contents do not match its hash")
        prev_hash, expected_seq = event.hash, expected_seq + 1
    last_seq = expected_seq - 1
    if last_seq != head_seq or prev_hash != head_hash:
        if last_seq < head_seq:
            return VerifyResult(False, count, last_seq + 1, f"events after {last_seq} are missing")
        return VerifyResult(False, count, last_seq, "the last event does not match the recorded head")
    return VerifyResult(True, count)
