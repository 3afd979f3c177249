"""Request and response bodies of the REST API: one schema per direction, never ORM objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    status: str
    version: str
    tracking: dict[str, dict[str, Any]]


class BindingPublic(BaseModel):
    role: str
    environment: str


class WhoAmI(BaseModel):
    name: str
    bindings: list[BindingPublic]


class EnvironmentPublic(BaseModel):
    name: str
    kind: str
    order: int
    tracking_uri: str
    artifact_root: str
    serving_address: str
    my_roles: list[str]


class EnvironmentsPublic(BaseModel):
    data: list[EnvironmentPublic]
    count: int


class UserCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    roles: list[str] = Field(min_length=1)
    environments: list[str] = Field(default_factory=list)
    email: str | None = None


class RolesChange(_Body):
    roles: list[str] = Field(min_length=1)
    environments: list[str] = Field(default_factory=list)


class UserPublic(BaseModel):
    name: str
    email: str | None
    kind: str
    created_at: datetime
    bindings: list[BindingPublic]


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class TokenCreate(_Body):
    name: str = Field(default="cli", min_length=1, max_length=64)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenPublic(BaseModel):
    id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


class TokenIssued(TokenPublic):
    token: str = Field(description="the token itself; shown this once and never stored")


class UserCreated(BaseModel):
    user: UserPublic
    token: TokenIssued


class AuditEventPublic(BaseModel):
    seq: int
    at: datetime
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
