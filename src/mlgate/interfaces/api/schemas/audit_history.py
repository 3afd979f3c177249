"""What served in an environment at a moment, from the audit log: its endpoints' slots and approvals."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlgate.interfaces.api.schemas.base import UtcDatetime


class ApprovalPublic(BaseModel):
    approver: str
    at: UtcDatetime
    gate: str
    request: int
    comment: str | None


class SlotAtPublic(BaseModel):
    endpoint: str
    slot: str
    model: str
    version: int
    weight: int = Field(description="the slot's share of the endpoint's traffic, in percent")
    approved_by: list[str]
    approvals: list[ApprovalPublic] = Field(description="the decisions of the gate into the environment")


class EndpointAtPublic(BaseModel):
    endpoint: str
    seq: int = Field(description="the audit event that set the slot table in force")
    changed_at: UtcDatetime
    changed_by: str
    action: str


class AuditAtPublic(BaseModel):
    environment: str
    at: UtcDatetime
    last_seq: int | None = Field(description="the last audit event replayed; None: none was at or before `at`")
    slots: list[SlotAtPublic]
    endpoints: list[EndpointAtPublic]
