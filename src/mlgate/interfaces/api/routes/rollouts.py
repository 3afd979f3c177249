"""Rollouts of an environment: the versions that passed its gate, rolled out to their endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mlgate.interfaces.api.deps import ContextDep, Reader
from mlgate.interfaces.api.params import RowId
from mlgate.interfaces.api.schemas.endpoints import RolloutPublic, RolloutsPublic, RolloutStepPublic
from mlgate.services.release import rollouts
from mlgate.services.release.rollouts import RolloutView

router = APIRouter(prefix="/api/v1/environments/{env}", tags=["rollouts"])


def rollout_public(view: RolloutView) -> RolloutPublic:
    return RolloutPublic(
        id=view.id,
        environment=view.environment,
        endpoint=view.endpoint,
        model=view.model,
        version=view.version,
        request_id=view.request_id,
        strategy=view.strategy,
        state=view.state,
        steps=[RolloutStepPublic.model_validate(step) for step in view.steps],
        from_slot=view.from_slot,
        to_slot=view.to_slot,
        previous_version=view.previous_version,
        reason=view.reason,
        created_at=view.created_at,
        updated_at=view.updated_at,
        finished_at=view.finished_at,
    )


@router.get("/rollouts", response_model=RolloutsPublic)
def list_rollouts(
    env: str,
    _: Reader,
    ctx: ContextDep,
    endpoint: Annotated[str | None, Query(description="Only this endpoint's rollouts.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RolloutsPublic:
    """The environment's rollouts, newest first."""
    ctx.settings.environment(env)
    data = [rollout_public(v) for v in rollouts.list_rollouts(ctx.db, env, endpoint=endpoint, limit=limit)]
    return RolloutsPublic(data=data, count=len(data))


@router.get("/rollouts/{rollout_id}", response_model=RolloutPublic)
def show_rollout(env: str, rollout_id: RowId, _: Reader, ctx: ContextDep) -> RolloutPublic:
    """One rollout: its steps with timings and the figures observed, and how it ended."""
    return rollout_public(rollouts.get(ctx.db, env, rollout_id))
