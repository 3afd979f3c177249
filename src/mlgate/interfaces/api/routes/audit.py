"""The audit log: list events and verify the hash chain (admins)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query

from mlgate.interfaces.api.deps import Administrator, ContextDep
from mlgate.interfaces.api.schemas.audit import AuditEventPublic, AuditEventsPublic, AuditVerifyPublic
from mlgate.services import audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=AuditEventsPublic)
def list_events(
    _: Administrator,
    ctx: ContextDep,
    actor: str | None = None,
    action: str | None = None,
    environment: str | None = None,
    since: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> AuditEventsPublic:
    where = audit.AuditFilter(actor=actor, action=action, environment=environment, since=since, limit=limit)
    events = [
        AuditEventPublic(
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            action=e.action,
            environment=e.environment,
            subject=e.subject,
            payload_digest=e.payload_digest,
            hash=e.hash,
        )
        for e in audit.list_events(ctx.db, where=where)
    ]
    return AuditEventsPublic(data=events, count=len(events))


@router.get("/verify", response_model=AuditVerifyPublic)
def verify(_: Administrator, ctx: ContextDep) -> AuditVerifyPublic:
    result = audit.verify(ctx.db)
    return AuditVerifyPublic(ok=result.ok, events=result.events, broken_seq=result.broken_seq, reason=result.reason)
