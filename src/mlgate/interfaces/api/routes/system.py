"""Health, the background workers, the OpenAPI document, and who the caller is."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request

from mlgate.interfaces.api.deps import Administrator, Authenticated, ContextDep, Public
from mlgate.interfaces.api.schemas.identity import BindingPublic, WhoAmI
from mlgate.interfaces.api.schemas.system import Health, WorkerPublic, WorkersPublic

router = APIRouter(prefix="/api/v1", tags=["system"])


@router.get("/health", response_model=Health)
def health(_: Public, ctx: ContextDep) -> Health:
    # Anonymous: no pids, sockets or ports of the internal services, only whether they are up. A tracking
    # server not started yet (they start at first use) is not a fault.
    ready = all(state.get("ready") or not state.get("started", True) for state in ctx.tracking.status().values())
    return Health(status="ok" if ready else "degraded")


@router.get("/workers", response_model=WorkersPublic)
def workers(_: Administrator, ctx: ContextDep) -> WorkersPublic:
    """Every background worker of the server (promotion, checks, rollouts, jobs, deliveries, monitors...):
    running or not, its ticks and failures since start, the last failure's error."""
    found = ctx.plane.all_workers()
    data = [WorkerPublic(name=w.name, running=w.running, **dataclasses.asdict(w.stats)) for w in found]
    return WorkersPublic(data=data, count=len(data))


@router.get("/openapi.json", include_in_schema=False)
def openapi(_: Public, request: Request) -> dict[str, Any]:
    document: dict[str, Any] = request.app.openapi()
    return document


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: Authenticated) -> WhoAmI:
    return WhoAmI(
        name=principal.name,
        bindings=[
            BindingPublic(role=role.value, environment=env)
            for env, roles in sorted(principal.bindings.items())
            for role in sorted(roles)
        ],
    )
