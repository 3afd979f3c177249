"""The audit log: its events, and whether the chain verifies."""

from __future__ import annotations

from pydantic import BaseModel

from mlgate.interfaces.api.schemas.base import UtcDatetime


class AuditEventPublic(BaseModel):
    seq: int
    at: UtcDatetime
    actor: str
    action: str
    environment: str | None
    subject: str | None
    payload_digest: str
    hash: str


class AuditEventsPublic(BaseModel):
    data: list[AuditEventPublic]
    count: int


class AuditVerifyPublic(BaseModel):
    ok: bool
    events: int
    broken_seq: int | None
    reason: str | None
