"""The audit log: its events, whether the log verifies, and its checkpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlgate.interfaces.api.schemas.base import UtcDatetime


class AuditEventPublic(BaseModel):
    seq: int
    at: UtcDatetime
    actor: str
    action: str
    environment: str | None
    subject: str | None
    payload_digest: str
    payload: Any = Field(default=None, description="what the event recorded (its digest is `payload_digest`)")
    hash: str


class AuditEventsPublic(BaseModel):
    data: list[AuditEventPublic]
    count: int


class AuditVerifyPublic(BaseModel):
    ok: bool
    events: int
    broken_seq: int | None = Field(description="the first bad event, or the event a contradicted checkpoint names")
    reason: str | None
    checkpoints: int = Field(description="signed checkpoints the log was held to")
    checkpoint: int | None = Field(description="the position (from 1) of the checkpoint the log contradicts")
    key_id: str | None = Field(description="the checkpoint signing key's id (SHA-256 of the public key, 16 digits)")
    last_checkpoint_seq: int | None
    unvouched: int = Field(description="events after the last checkpoint: authenticated, not yet held outside")


class AuditCheckpointPublic(BaseModel):
    written: bool
    reason: str
    seq: int | None = None
    hash: str | None = None
    at: str | None = None
    key_id: str | None = None
    signature: str | None = None
