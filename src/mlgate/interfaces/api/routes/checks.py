"""Checks of a model version in staging: run them now (by hand), read their records."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, status

from mlgate.domain.permissions import Action, Principal
from mlgate.interfaces.api.deps import ContextDep, Permission, Reader
from mlgate.interfaces.api.params import VersionNumber
from mlgate.interfaces.api.schemas.models import CheckPublic, ChecksCreate, ChecksPublic
from mlgate.services.staging import checks

router = APIRouter(prefix="/api/v1/environments/{env}/models/{name}/versions/{version}/checks", tags=["checks"])

Checker = Annotated[Principal, Depends(Permission(Action.RUN_CHECKS))]


def _public(views: list[checks.CheckView]) -> ChecksPublic:
    data = [CheckPublic(**dataclasses.asdict(v)) for v in views]
    return ChecksPublic(data=data, count=len(data))


@router.post("", response_model=ChecksPublic, status_code=status.HTTP_202_ACCEPTED)
def run_checks(
    env: str, name: str, version: VersionNumber, body: ChecksCreate, principal: Checker, ctx: ContextDep
) -> ChecksPublic:
    """Run the configured checks (or `only` these) on the version; answers with their `running` records."""
    started = checks.request_runs(
        ctx.db,
        ctx.settings,
        actor=principal.name,
        env=env,
        name=name,
        version=version,
        only=body.only,
        events=ctx.events,
    )
    return _public(started)


@router.get("", response_model=ChecksPublic)
def list_checks(env: str, name: str, version: VersionNumber, _: Reader, ctx: ContextDep) -> ChecksPublic:
    """Every check record of the version, oldest first; the gate reads the latest of each name."""
    return _public(checks.list_checks(ctx.db, env=env, name=name, version=version))
