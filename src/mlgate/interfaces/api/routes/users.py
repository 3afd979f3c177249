"""Users, their role bindings and API tokens: admins manage everyone's, anyone their own tokens."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from fastapi import APIRouter, status

from mlgate.interfaces.api.deps import Administrator, Authenticated, ContextDep
from mlgate.interfaces.api.params import RowId
from mlgate.interfaces.api.schemas.identity import (
    BindingPublic,
    RolesChange,
    TokenCreate,
    TokenIssued,
    TokenPublic,
    TokensPublic,
    UserCreate,
    UserCreated,
    UserPublic,
    UsersPublic,
)
from mlgate.services.identity import accounts

router = APIRouter(prefix="/api/v1", tags=["identity"])


def user_public(user: accounts.UserView) -> UserPublic:
    return UserPublic(
        name=user.name,
        email=user.email,
        kind=user.kind,
        created_at=user.created_at,
        bindings=[BindingPublic(role=b.role.value, environment=b.environment) for b in user.bindings],
    )


def token_public(token: accounts.TokenView) -> TokenPublic:
    return TokenPublic(**dataclasses.asdict(token))


def _issued(issued: accounts.IssuedToken) -> TokenIssued:
    return TokenIssued(**token_public(issued.record).model_dump(), token=issued.value)


def _expiry(body: TokenCreate) -> timedelta | None:
    return timedelta(days=body.expires_in_days) if body.expires_in_days else None


@router.get("/users", response_model=UsersPublic)
def list_users(_: Administrator, ctx: ContextDep) -> UsersPublic:
    users = [user_public(u) for u in accounts.list_users(ctx.db)]
    return UsersPublic(data=users, count=len(users))


@router.post("/users", response_model=UserCreated, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, principal: Administrator, ctx: ContextDep) -> UserCreated:
    bindings = accounts.parse_bindings(body.roles, body.environments, ctx.settings.env_names)
    user, issued = accounts.create_user(
        ctx.db, actor=principal.name, name=body.name, bindings=bindings, email=body.email, gates=ctx.settings.gates
    )
    return UserCreated(user=user_public(user), token=_issued(issued))


@router.get("/users/{name}", response_model=UserPublic)
def show_user(name: str, _: Administrator, ctx: ContextDep) -> UserPublic:
    return user_public(accounts.get_user(ctx.db, name))


@router.post("/users/{name}/roles", response_model=UserPublic)
def grant_roles(name: str, body: RolesChange, principal: Administrator, ctx: ContextDep) -> UserPublic:
    bindings = accounts.parse_bindings(body.roles, body.environments, ctx.settings.env_names)
    return user_public(accounts.grant(ctx.db, ctx.settings, actor=principal.name, name=name, bindings=bindings))


@router.post("/users/{name}/roles/revoke", response_model=UserPublic)
def revoke_roles(name: str, body: RolesChange, principal: Administrator, ctx: ContextDep) -> UserPublic:
    bindings = accounts.parse_bindings(body.roles, body.environments, ctx.settings.env_names)
    return user_public(accounts.revoke_roles(ctx.db, actor=principal.name, name=name, bindings=bindings))


@router.get("/tokens", response_model=TokensPublic)
def list_tokens(_: Administrator, ctx: ContextDep, user: str | None = None) -> TokensPublic:
    tokens = [token_public(t) for t in accounts.list_tokens(ctx.db, user_name=user)]
    return TokensPublic(data=tokens, count=len(tokens))


@router.post("/users/{name}/tokens", response_model=TokenIssued, status_code=status.HTTP_201_CREATED)
def create_token(name: str, body: TokenCreate, principal: Administrator, ctx: ContextDep) -> TokenIssued:
    issued = accounts.create_token(
        ctx.db, ctx.settings, actor=principal.name, user_name=name, name=body.name, expires_in=_expiry(body)
    )
    return _issued(issued)


@router.delete("/tokens/{token_id}", response_model=TokenPublic)
def revoke_token(token_id: RowId, principal: Administrator, ctx: ContextDep) -> TokenPublic:
    return token_public(accounts.revoke_token(ctx.db, actor=principal.name, token_id=token_id))


@router.get("/me/tokens", response_model=TokensPublic)
def list_my_tokens(principal: Authenticated, ctx: ContextDep) -> TokensPublic:
    tokens = [token_public(t) for t in accounts.list_tokens(ctx.db, user_name=principal.name)]
    return TokensPublic(data=tokens, count=len(tokens))


@router.post("/me/tokens", response_model=TokenIssued, status_code=status.HTTP_201_CREATED)
def create_my_token(body: TokenCreate, principal: Authenticated, ctx: ContextDep) -> TokenIssued:
    issued = accounts.create_token(
        ctx.db, ctx.settings, actor=principal.name, user_name=principal.name, name=body.name, expires_in=_expiry(body)
    )
    return _issued(issued)


@router.delete("/me/tokens/{token_id}", response_model=TokenPublic)
def revoke_my_token(token_id: RowId, principal: Authenticated, ctx: ContextDep) -> TokenPublic:
    token = accounts.revoke_token(ctx.db, actor=principal.name, token_id=token_id, owner=principal.name)
    return token_public(token)
