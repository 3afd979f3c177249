"""Model versions of an environment: register one from a run's logged model (development), list, show, delete."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from mlgate.adapters.mlflow.registry import MlflowRegistry
from mlgate.domain.permissions import Action, Principal
from mlgate.interfaces.api.deps import ContextDep, Permission, Reader
from mlgate.interfaces.api.params import VersionNumber
from mlgate.interfaces.api.schemas.models import (
    ModelRegister,
    ModelRegistered,
    ModelVersionDeleted,
    ModelVersionLink,
    ModelVersionPublic,
    ModelVersionsPublic,
    ModelVersionSummary,
)
from mlgate.services.promotion import copying
from mlgate.services.registration import deletion, models, submission

router = APIRouter(prefix="/api/v1/environments/{env}/models", tags=["models"])

Trainer = Annotated[Principal, Depends(Permission(Action.TRAIN))]


def version_public(view: models.ModelVersionView) -> ModelVersionPublic:
    return ModelVersionPublic(**dataclasses.asdict(view))


def summary(view: models.ModelVersionView) -> ModelVersionSummary:
    return ModelVersionSummary(
        environment=view.environment,
        name=view.name,
        version=view.version,
        digest=view.digest,
        run_id=view.run_id,
        model_uri=view.model_uri,
        has_profile=view.profile is not None,
        created_by=view.created_by,
        created_at=view.created_at,
    )


@router.post("", response_model=ModelRegistered, status_code=status.HTTP_201_CREATED)
def register(env: str, body: ModelRegister, response: Response, principal: Trainer, ctx: ContextDep) -> ModelRegistered:
    """Register a run's logged model as the next version of `name`, with digest, lineage, profile and card.

    The same logged model registered again under the same name returns its version (200), not a copy.
    """
    registry = MlflowRegistry(ctx.tracking.upstream(env), env=env)
    done = submission.register_and_request(
        ctx.db,
        ctx.settings,
        registry,
        actor=principal.name,
        env=env,
        request=models.RegisterRequest(**body.model_dump()),
        base_url=ctx.base_url,
    )
    if not done.created:
        response.status_code = status.HTTP_200_OK
    return ModelRegistered(**dataclasses.asdict(done.version), created=done.created, request_id=done.request_id)


@router.get("", response_model=ModelVersionsPublic)
def list_versions(env: str, _: Reader, ctx: ContextDep, name: str | None = None) -> ModelVersionsPublic:
    data = [summary(v) for v in models.list_versions(ctx.db, env, name=name)]
    return ModelVersionsPublic(data=data, count=len(data))


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
def show_version(env: str, name: str, version: VersionNumber, principal: Reader, ctx: ContextDep) -> ModelVersionPublic:
    """One version, with its promotion chain (dev -> staging -> production) where the caller may read."""
    public = version_public(models.get(ctx.db, env, name, version))

    def readable(other: str) -> bool:
        known = other in ctx.settings.env_names
        return known and principal.may(Action.READ, other, ctx.settings.environment(other).kind)

    links = copying.chain(ctx.db, env, name, version, visible=readable)
    return public.model_copy(update={"chain": [ModelVersionLink(**dataclasses.asdict(link)) for link in links]})


@router.delete("/{name}/versions/{version}", response_model=ModelVersionDeleted)
def delete_version(
    env: str, name: str, version: VersionNumber, principal: Trainer, ctx: ContextDep
) -> ModelVersionDeleted:
    """Delete a development version that no request carries and that was never promoted: its MLflow version
    goes, mlgate's record stays, marked deleted (its number is never given again)."""
    registry = MlflowRegistry(ctx.tracking.upstream(env), env=env)
    deleted = deletion.delete_version(
        ctx.db, ctx.settings, registry, actor=principal.name, env=env, name=name, version=version
    )
    return ModelVersionDeleted(**dataclasses.asdict(deleted))
