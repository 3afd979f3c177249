"""Environments: where each one's tracking server, artifacts and serving host are."""

from __future__ import annotations

from fastapi import APIRouter

from mlgate.config import Environment
from mlgate.domain.permissions import Principal
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.deps import Authenticated, ContextDep, Reader
from mlgate.interfaces.api.schemas.system import EnvironmentPublic, EnvironmentsPublic

router = APIRouter(prefix="/api/v1/environments", tags=["environments"])


def _public(ctx: AppContext, env: Environment, principal: Principal) -> EnvironmentPublic:
    port = env.serving_port
    return EnvironmentPublic(
        name=env.name,
        kind=env.kind.value,
        order=env.index,
        tracking_uri=ctx.tracking_uri(env.name),
        artifact_root=str(env.artifact_root),
        serving_address=f"http://127.0.0.1:{port}" if port else "port chosen at start",
        my_roles=sorted(principal.roles_in(env.name)),
    )


@router.get("", response_model=EnvironmentsPublic)
def list_environments(principal: Authenticated, ctx: ContextDep) -> EnvironmentsPublic:
    data = [_public(ctx, env, principal) for env in ctx.settings.environments]
    return EnvironmentsPublic(data=data, count=len(data))


@router.get("/{env}", response_model=EnvironmentPublic)
def show_environment(env: str, principal: Reader, ctx: ContextDep) -> EnvironmentPublic:
    return _public(ctx, ctx.settings.environment(env), principal)
