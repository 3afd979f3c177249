"""Data assets of an environment: register a version (upload), list and show versions."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Response, status

from mlgate.domain.jobs import DataRef
from mlgate.domain.permissions import Action, Principal
from mlgate.errors import ValidationError
from mlgate.interfaces.api.deps import ContextDep, Permission, Reader
from mlgate.interfaces.api.schemas.training import DataAssetPublic, DataAssetsPublic
from mlgate.interfaces.api.uploads import spooled_body
from mlgate.services.training import data_assets

router = APIRouter(prefix="/api/v1/environments/{env}/data", tags=["data"])

DataRegistrar = Annotated[Principal, Depends(Permission(Action.REGISTER_DATA))]
# The upload as sent (compressed); spooled to disk, never held in memory. What it may unpack to is
# data_assets.DATA_CAPS.
MAX_DATA_BYTES = 1024 * 1024 * 1024


def asset_public(asset: data_assets.DataAssetView) -> DataAssetPublic:
    return DataAssetPublic(**dataclasses.asdict(asset))


@router.put("/{name}", response_model=DataAssetPublic, status_code=status.HTTP_201_CREATED)
async def register(
    env: str,
    name: str,
    request: Request,
    response: Response,
    principal: DataRegistrar,
    ctx: ContextDep,
    source: Annotated[str | None, Query(max_length=1024)] = None,
) -> DataAssetPublic:
    """The file(s) as a gzipped tar; the same bytes as the latest version return it (200), not a copy."""
    environment = ctx.settings.environment(env)
    async with spooled_body(request, limit=MAX_DATA_BYTES, what="the data upload") as upload:
        asset, created = await to_thread.run_sync(
            lambda: data_assets.register(
                ctx.db, environment, actor=principal.name, name=name, archive=upload, source=source
            )
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return asset_public(asset)


@router.get("", response_model=DataAssetsPublic)
def list_assets(env: str, _: Reader, ctx: ContextDep, name: str | None = None) -> DataAssetsPublic:
    data = [asset_public(a) for a in data_assets.list_assets(ctx.db, env, name=name)]
    return DataAssetsPublic(data=data, count=len(data))


@router.get("/{ref}", response_model=DataAssetPublic)
def show_asset(env: str, ref: str, _: Reader, ctx: ContextDep) -> DataAssetPublic:
    """`NAME` (the latest version) or `NAME@VERSION`."""
    try:
        parsed = DataRef.parse(ref)
    except ValueError as exc:
        raise ValidationError(str(exc), details={"data": ref}) from None
    return asset_public(data_assets.resolve(ctx.db, env, parsed))
