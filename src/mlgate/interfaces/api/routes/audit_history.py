"""What served in an environment at a moment, answered from the audit log alone (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from mlgate.domain.audit_history import ServingAt, parse_moment
from mlgate.interfaces.api.deps import Administrator, ContextDep
from mlgate.interfaces.api.schemas.audit_history import AuditAtPublic
from mlgate.services import audit_history

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


def serving_at_public(answer: ServingAt) -> AuditAtPublic:
    """The answer as the API shows it: every slot (`ServingAt.slots`) and each endpoint's last change."""
    return AuditAtPublic.model_validate(answer, from_attributes=True)


@router.get("/at", response_model=AuditAtPublic)
def serving_at(_: Administrator, ctx: ContextDep, env: str, time: str | None = None) -> AuditAtPublic:
    """Which versions served which slots of `env`'s endpoints at `time` (ISO 8601; no offset: UTC; none:
    now), with what weights, and who approved each: replayed from the audit log alone."""
    moment = parse_moment(time) if time is not None else ctx.plane.clock.now()
    return serving_at_public(audit_history.serving_at(ctx.db, ctx.settings, environment=env, at=moment))
