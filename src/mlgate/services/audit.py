"""The audit log: append an event inside the caller's transaction, list events, verify the chain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import AUDIT_MAC_KEY, Database
from mlgate.adapters.sql.models import AuditEvent, AuditHead, utcnow
from mlgate.domain.audit import event_hash, event_mac, payload_digest


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    environment: str | None = None,
    subject: str | None = None,
    payload: Any = None,
) -> AuditEvent:
    """Append one event, in the same transaction as the change it records.

    The head row is locked first (FOR UPDATE on PostgreSQL; SQLite's write transactions already hold
    the database's write lock), so two appends never take the same sequence number. The event's MAC is
    made with the key the session's database holds (none: the event is left unauthenticated, and
    `verify` says so).
    """
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    fields: dict[str, Any] = {
        "seq": head.seq + 1,
        "at": utcnow(),
        "actor": actor,
        "action": action,
        "environment": environment,
        "subject": subject,
        "payload_digest": payload_digest(payload if payload is not None else {}),
        "prev_hash": head.hash,
    }
    digest = event_hash(**fields)
    key: bytes | None = session.info.get(AUDIT_MAC_KEY)
    mac = event_mac(key, event_hash=digest, has_payload=True) if key is not None else None
    event = AuditEvent(**fields, hash=digest, payload=payload if payload is not None else {}, mac=mac)
    session.add(event)
    head.seq, head.hash = event.seq, event.hash
    session.flush()
    return event


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    environment: str | None = None
    since: datetime | None = None
    limit: int = 100


def list_events(db: Database, *, where: AuditFilter) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(where.limit)
    if where.actor:
        query = query.where(AuditEvent.actor == where.actor)
    if where.action:
        query = query.where(AuditEvent.action.startswith(where.action))
    if where.environment:
        query = query.where(AuditEvent.environment == where.environment)
    if where.since:
        query = query.where(AuditEvent.at >= where.since)
    with db.read() as session:
        return list(session.execute(query).scalars())
