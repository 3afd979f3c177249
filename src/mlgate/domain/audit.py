"""The audit log's hash chain: each event's hash covers all its columns and the previous hash.

The chain's head (last sequence number and hash) is kept apart from the events, so that deleting the
last event, which leaves a valid shorter chain, is detected too. A hash chain alone proves nothing to
someone who can rewrite the whole table: each event also carries a MAC, keyed with a secret kept out
of the database (`event_mac`), and the head is checkpointed outside it (`domain.audit_checkpoints`).
"""

from __future__ import annotations

import hashlib
import hmac
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
    payload: Any = None
    mac: str | None = None


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


def event_mac(key: bytes, *, event_hash: str, has_payload: bool) -> str:
    """The event's MAC: HMAC-SHA256 over its hash (which covers every column) and whether its payload
    is kept, so that neither a rehashed event nor a dropped payload passes without the key."""
    message = json.dumps(["mlgate-audit-event-v1", event_hash, has_payload], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    broken_seq: int | None = None
    reason: str | None = None


def verify_chain(
    events: Iterable[ChainedEvent],
    *,
    head_seq: int | None,
    head_hash: str | None,
    mac_key: bytes | None = None,
    after: tuple[int, str] = (0, GENESIS),
) -> VerifyResult:
    """Walk the events in sequence order; report the first one that breaks the chain.

    With `mac_key`, each event's MAC is checked too; without a head (an exported bundle has none) the
    last event is taken as the end, and checkpoints must vouch for it. `after`: the chain's tail only,
    from a known (sequence number, hash), a checkpoint's.
    """
    prev_hash, expected_seq, count = after[1], after[0] + 1, 0
    for event in events:
        count += 1
        broken = _broken_link(event, expected_seq=expected_seq, prev_hash=prev_hash, mac_key=mac_key)
        if broken is not None:
            return VerifyResult(False, count, event.seq if event.seq == expected_seq else expected_seq, broken)
        prev_hash, expected_seq = event.hash, expected_seq + 1
    last_seq = expected_seq - 1
    if head_seq is not None and (last_seq != head_seq or prev_hash != head_hash):
        if last_seq < head_seq:
            return VerifyResult(False, count, last_seq + 1, f"events after {last_seq} are missing")
        return VerifyResult(False, count, last_seq, "the last event does not match the recorded head")
    return VerifyResult(True, count)


def _broken_link(event: ChainedEvent, *, expected_seq: int, prev_hash: str, mac_key: bytes | None) -> str | None:
    if event.seq != expected_seq:
        return f"event {expected_seq} is missing (found {event.seq} next)"
    if event.prev_hash != prev_hash:
        return "its link to the previous event does not match"
    if event.payload is not None and payload_digest(event.payload) != event.payload_digest:
        return "its payload does not match its digest"
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
        return "its contents do not match its hash"
    if mac_key is None:
        return None
    if event.mac is None:
        return "it carries no MAC: it was written without the audit key"
    expected = event_mac(mac_key, event_hash=event.hash, has_payload=event.payload is not None)
    if not hmac.compare_digest(expected, event.mac):
        return "its MAC does not match: it was written or rewritten without the audit key"
    return None
