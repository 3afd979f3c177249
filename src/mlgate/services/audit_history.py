"""What served in an environment at a moment: its release and gate events from the audit log, replayed
by `domain.audit_history` (nothing else in the database is consulted)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import AuditEvent
from mlgate.config import Settings
from mlgate.domain.audit_history import GATE_ACTIONS, RELEASE_SUBJECT, AuditRecord, ServingAt, as_utc, replay


def serving_at(db: Database, settings: Settings, *, environment: str, at: datetime) -> ServingAt:
    """Which versions served which slots of `environment`'s endpoints at `at` (naive: UTC), with what
    weights, and who approved each through the gate into it. A moment before any event, or to come,
    is an answer too (nothing served yet; what serves now)."""
    settings.environment(environment)  # an unknown one is refused, naming the known ones
    moment = as_utc(at)
    gate = next((g.name for g in settings.gates if g.target == environment), None)
    query = (
        select(AuditEvent)
        .where(
            AuditEvent.environment == environment,
            AuditEvent.at <= moment,
            or_(AuditEvent.subject.startswith(RELEASE_SUBJECT), AuditEvent.action.in_(GATE_ACTIONS)),
        )
        .order_by(AuditEvent.seq)
    )
    with db.read() as session:
        records = [
            AuditRecord(
                seq=row.seq,
                at=row.at,
                actor=row.actor,
                action=row.action,
                environment=row.environment,
                subject=row.subject,
                payload=row.payload,
            )
            for row in session.execute(query).scalars()
        ]
    return replay(records, environment=environment, at=moment, gate=gate)
