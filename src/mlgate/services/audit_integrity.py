"""Audit integrity that does not rest on the database: MACs checked, checkpoints taken and held to.

- `verify` walks the whole log with the MAC key and the recorded head, then holds it to every signed
  checkpoint in the checkpoint file: an edited, inserted or deleted event breaks a MAC or a link; a whole
  table rewritten and rehashed breaks the first MAC and contradicts the checkpoints; a truncated tail
  (head moved back too) contradicts the last checkpoint.
- `take_checkpoint` signs the head, but only after the events since the last checkpoint were found whole
  and authenticated: a tampered log is never vouched for. It appends one line to the checkpoint file and
  queues `audit.checkpoint` for the webhooks that take it.
- `seal_unauthenticated` gives the events recorded before the keys existed their MACs, once, when the
  MAC key is made.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import AuditEvent, AuditHead
from mlgate.config import Settings
from mlgate.domain import audit_checkpoints as checkpoints
from mlgate.domain.audit import GENESIS, ChainedEvent, VerifyResult, canonical_time, event_mac, verify_chain
from mlgate.domain.audit_checkpoints import Checkpoint, MalformedCheckpoint
from mlgate.services.audit_keys import AuditKeys
from mlgate.services.notifications import outbox

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass(frozen=True)
class IntegrityReport:
    ok: bool
    events: int
    checkpoints: int
    broken_seq: int | None = None
    reason: str | None = None
    checkpoint: int | None = None  # the position (1-based) of the checkpoint the log contradicts
    key_id: str | None = None
    last_checkpoint_seq: int | None = None

    @property
    def unvouched(self) -> int:
        """Events after the last checkpoint: whole by their MACs, not yet held outside the database."""
        return self.events - (self.last_checkpoint_seq or 0) if self.ok else 0


def chained(row: AuditEvent) -> ChainedEvent:
    return ChainedEvent(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        environment=row.environment,
        subject=row.subject,
        payload_digest=row.payload_digest,
        prev_hash=row.prev_hash,
        hash=row.hash,
        payload=row.payload,
        mac=row.mac,
    )


def all_events(session: Session, *, after: int = 0) -> Iterator[ChainedEvent]:
    rows = session.execute(select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq))
    for row in rows.scalars():
        yield chained(row)
        session.expunge(row)  # a long log streams through; nothing is kept in the identity map


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """The checkpoint file's checkpoints, in order; none when there is no file yet."""
    try:
        with path.open(encoding="utf-8") as handle:
            return checkpoints.parse_lines(handle)
    except FileNotFoundError:
        return []


def verify_events(db: Database, mac_key: bytes, *, hashes: dict[int, str] | None = None) -> VerifyResult:
    """The events in the database checked link by link, against their MACs and up to the head (no
    checkpoints: `verify`); `hashes` collects each event's hash by sequence number."""
    seen = hashes if hashes is not None else {}

    def remembered(events: Iterator[ChainedEvent]) -> Iterator[ChainedEvent]:
        for event in events:
            seen[event.seq] = event.hash
            yield event

    with db.read() as session:
        head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        return verify_chain(remembered(all_events(session)), head_seq=head.seq, head_hash=head.hash, mac_key=mac_key)


def verify(db: Database, settings: Settings, keys: AuditKeys) -> IntegrityReport:
    """The events (`verify_events`) held to every checkpoint in the checkpoint file."""
    public_key = keys.public_key()
    try:
        found = read_checkpoints(settings.audit_checkpoint_file)
    except MalformedCheckpoint as exc:
        reason = f"the checkpoint file is malformed: {exc}"
        return IntegrityReport(False, 0, 0, reason=reason, key_id=checkpoints.key_id(public_key))
    hashes: dict[int, str] = {}
    chain = verify_events(db, keys.mac_key, hashes=hashes)
    return held_to_checkpoints(chain, found, hashes=hashes, public_key=public_key)


def held_to_checkpoints(
    chain: VerifyResult, found: list[Checkpoint], *, hashes: dict[int, str], public_key: Ed25519PublicKey
) -> IntegrityReport:
    """The report on a chain already walked (`hashes`: what it holds now), held to its checkpoints."""
    key_id, last = checkpoints.key_id(public_key), found[-1].seq if found else None
    if not chain.ok:
        return IntegrityReport(False, chain.events, len(found), chain.broken_seq, chain.reason, None, key_id, last)
    contradiction = checkpoints.first_contradiction(found, hashes=hashes, public_key=public_key)
    if contradiction is not None:
        reason = f"checkpoint {contradiction.checkpoint} (event {contradiction.seq}): {contradiction.reason}"
        return IntegrityReport(
            False, chain.events, len(found), contradiction.seq, reason, contradiction.checkpoint, key_id, last
        )
    return IntegrityReport(True, chain.events, len(found), key_id=key_id, last_checkpoint_seq=last)


@dataclass(frozen=True)
class CheckpointOutcome:
    checkpoint: Checkpoint | None  # the new one; None when nothing was due or the log did not verify
    reason: str  # what was done, or why not


def _due(head_seq: int, last: Checkpoint | None, settings: Settings, now: datetime) -> bool:
    policy = settings.raw.audit
    if head_seq <= (last.seq if last else 0):
        return False
    if last is None or head_seq - last.seq >= policy.checkpoint_every_events:
        return True
    taken = datetime.fromisoformat(last.at)
    return now - taken >= timedelta(minutes=policy.checkpoint_every_minutes)


def take_checkpoint(
    db: Database, settings: Settings, keys: AuditKeys, *, now: datetime, force: bool = False
) -> CheckpointOutcome:
    """Sign and append a checkpoint of the head when one is due (`force`: whenever the head moved)."""
    path = settings.audit_checkpoint_file
    found = read_checkpoints(path)
    last = found[-1] if found else None
    with db.read() as session:
        head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        if head.seq <= (last.seq if last else 0):
            return CheckpointOutcome(None, f"no event since the last checkpoint (event {head.seq})")
        if not force and not _due(head.seq, last, settings, now):
            return CheckpointOutcome(None, "no checkpoint due")
        start = (last.seq, last.hash) if last else (0, GENESIS)
        tail = all_events(session, after=start[0])
        since = verify_chain(tail, head_seq=head.seq, head_hash=head.hash, mac_key=keys.mac_key, after=start)
        if not since.ok:
            return CheckpointOutcome(None, f"the log does not verify (event {since.broken_seq}: {since.reason})")
        head_seq, head_hash = head.seq, head.hash
    made = checkpoints.sign(keys.signing_key(), seq=head_seq, event_hash=head_hash, at=canonical_time(now))
    _append(path, made.line())
    with db.write() as session:
        outbox.emit_audit_checkpoint(session, settings, checkpoint=made)
    return CheckpointOutcome(made, f"checkpoint of event {head_seq} written to {path}")


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def seal_unauthenticated(db: Database, keys: AuditKeys) -> int:
    """MAC every event that has none; only when the MAC key was just made (see `audit_keys`)."""
    with db.write() as session:
        rows = list(session.execute(select(AuditEvent).where(AuditEvent.mac.is_(None))).scalars())
        for row in rows:
            row.mac = event_mac(keys.mac_key, event_hash=row.hash, has_payload=row.payload is not None)
    return len(rows)
