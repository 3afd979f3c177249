"""People: their role bindings, their accounts and their API tokens."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlgate.interfaces.api.schemas.base import StrictBody, UtcDatetime


class BindingPublic(BaseModel):
    role: str
    environment: str


class WhoAmI(BaseModel):
    name: str
    bindings: list[BindingPublic]


class UserCreate(StrictBody):
    name: str = Field(min_length=1, max_length=64)
    roles: list[str] = Field(min_length=1)
    environments: list[str] = Field(default_factory=list)
    email: str | None = Field(default=None, max_length=254)  # the column's width


class RolesChange(StrictBody):
    roles: list[str] = Field(min_length=1)
    environments: list[str] = Field(default_factory=list)


class UserPublic(BaseModel):
    name: str
    email: str | None
    kind: str
    created_at: UtcDatetime
    bindings: list[BindingPublic]


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class TokenCreate(StrictBody):
    name: str = Field(default="cli", min_length=1, max_length=64)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenPublic(BaseModel):
    id: int
    user: str
    name: str
    prefix: str
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


class TokenIssued(TokenPublic):
    token: str = Field(description="the token itself; shown this once and never stored")


class UserCreated(BaseModel):
    user: UserPublic
    token: TokenIssued
