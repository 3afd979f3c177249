"""What served in an environment at a moment, answered from the audit log alone (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from mlgate.domain.audit_history import ServingAt, parse_moment
from mlgate.interfaces.api.deps import Administrator, ContextDep
from mlgate.interfaces.api.schemas.audit_history import (
    ApprovalPublic,
    AuditAtPublic,
    EndpointAtPublic,
    SlotAtPublic,
)
from mlgate.services import audit_history

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


def serving_at_public(answer: ServingAt) -> AuditAtPublic:
    return AuditAtPublic(
        environment=answer.environment,
        at=answer.at,
        last_seq=answer.last_seq,
        slots=[
            SlotAtPublic(
                endpoint=s.endpoint,
                slot=s.slot,
                model=s.model,
                version=s.version,
                weight=s.weight,
                approved_by=s.approved_by,
                approvals=[
                    ApprovalPublic(approver=a.approver, at=a.at, gate=a.gate, request=a.request, comment=a.comment)
                    for a in s.approvals
                ],
            )
            for s in answer.slots
        ],
        endpoints=[
            EndpointAtPublic(
                endpoint=e.endpoint, seq=e.seq, changed_at=e.changed_at, changed_by=e.changed_by, action=e.action
            )
            for e in answer.endpoints
        ],
    )


@router.get("/at", response_model=AuditAtPublic)
def serving_at(_: Administrator, ctx: ContextDep, env: str, time: str | None = None) -> AuditAtPublic:
    """Which versions served which slots of `env`'s endpoints at `time` (ISO 8601; no offset: UTC; none:
    now), with what weights, and who approved each: replayed from the audit log alone."""
    moment = parse_moment(time) if time is not None else ctx.plane.clock.now()
    return serving_at_public(audit_history.serving_at(ctx.db, ctx.settings, environment=env, at=moment))
