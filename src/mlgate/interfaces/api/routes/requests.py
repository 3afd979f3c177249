"""Promotion requests: open one out of an environment, decide one into an environment, read them."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from mlgate.domain.permissions import Action, Principal
from mlgate.errors import NotFoundError
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.deps import Authenticated, ContextDep, Permission, Reader
from mlgate.interfaces.api.params import RowId
from mlgate.interfaces.api.schemas.models import RequestCreate, RequestLocation, RequestPublic, RequestsPublic, Verdict
from mlgate.services.promotion import requests

router = APIRouter(prefix="/api/v1", tags=["requests"])

Requester = Annotated[Principal, Depends(Permission(Action.REQUEST_PROMOTION))]
Decider = Annotated[Principal, Depends(Permission(Action.DECIDE_GATE))]


def request_public(request: requests.RequestView) -> RequestPublic:
    return RequestPublic(**dataclasses.asdict(request))


@router.post("/environments/{env}/requests", response_model=RequestPublic, status_code=status.HTTP_201_CREATED)
def open_request(env: str, body: RequestCreate, principal: Requester, ctx: ContextDep) -> RequestPublic:
    """Open a request to promote a version of `env` through the gate out of it."""
    opened = requests.open_request(
        ctx.db,
        ctx.settings,
        actor=principal.name,
        source=env,
        name=body.name,
        version=body.version,
        target=body.to,
        base_url=ctx.base_url,
    )
    return request_public(opened)


@router.get("/environments/{env}/requests", response_model=RequestsPublic)
def list_requests(
    env: str,
    _: Reader,
    ctx: ContextDep,
    state: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> RequestsPublic:
    """Requests out of or into `env`, newest first."""
    data = [request_public(r) for r in requests.list_requests(ctx.db, env=env, state=state, limit=limit)]
    return RequestsPublic(data=data, count=len(data))


@router.get("/environments/{env}/requests/{request_id}", response_model=RequestPublic)
def show_request(env: str, request_id: RowId, _: Reader, ctx: ContextDep) -> RequestPublic:
    return request_public(requests.get(ctx.db, request_id, env=env))


def _decide(
    ctx: AppContext, principal: Principal, env: str, request_id: int, body: Verdict, *, approve: bool
) -> RequestPublic:
    decided = requests.decide(
        ctx.db,
        ctx.settings,
        principal=principal,
        env=env,
        request_id=request_id,
        approve=approve,
        comment=body.comment,
        base_url=ctx.base_url,
        events=ctx.events,
    )
    return request_public(decided)


@router.post("/environments/{env}/requests/{request_id}/approve", response_model=RequestPublic)
def approve(env: str, request_id: RowId, body: Verdict, principal: Decider, ctx: ContextDep) -> RequestPublic:
    """Approve a request into `env`; the final approval hands it to the promotion worker."""
    return _decide(ctx, principal, env, request_id, body, approve=True)


@router.post("/environments/{env}/requests/{request_id}/reject", response_model=RequestPublic)
def reject(env: str, request_id: RowId, body: Verdict, principal: Decider, ctx: ContextDep) -> RequestPublic:
    """Reject a request into `env`, with the reason: it closes the request."""
    return _decide(ctx, principal, env, request_id, body, approve=False)


@router.get("/requests/waiting", response_model=RequestsPublic)
def waiting(principal: Authenticated, ctx: ContextDep) -> RequestsPublic:
    """Open requests the caller may decide and has not yet: their inbox of decisions."""
    data = [request_public(r) for r in requests.waiting_for(ctx.db, ctx.settings, principal)]
    return RequestsPublic(data=data, count=len(data))


@router.get("/requests/{request_id}/location", response_model=RequestLocation)
def locate(request_id: RowId, principal: Authenticated, ctx: ContextDep) -> RequestLocation:
    """Which environments a request links, for callers that know only its id; only for people with a
    role in one of them (anyone else learns nothing, not even that it exists)."""
    found = requests.get(ctx.db, request_id)
    if not (principal.roles_in(found.source_env) or principal.roles_in(found.target_env)):
        raise NotFoundError(f"no promotion request {request_id}", details={"request": request_id})
    return RequestLocation(id=found.id, source_env=found.source_env, target_env=found.target_env)
