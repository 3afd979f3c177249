"""Endpoints of an environment: create, read, deploy a version into a slot, shift traffic, roll back,
rotate keys, and score through the control plane with the caller's token."""

from __future__ import annotations

from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response, status

from mlgate.adapters.serving.base import HostStatus
from mlgate.domain.endpoints import Mirror
from mlgate.domain.permissions import Action, Principal
from mlgate.domain.tokens import display_prefix
from mlgate.errors import BackendError
from mlgate.interfaces.api.deps import ContextDep, Permission, Reader
from mlgate.interfaces.api.schemas.endpoints import (
    DeploymentCreate,
    EndpointCreate,
    EndpointCreated,
    EndpointPublic,
    EndpointsPublic,
    HostPublic,
    KeyRotated,
    SlotPublic,
    TrafficUpdate,
)
from mlgate.interfaces.api.uploads import read_body
from mlgate.services.release import endpoints
from mlgate.services.release.endpoints import EndpointView
from mlgate.services.release.serving import Serving

router = APIRouter(prefix="/api/v1/environments/{env}", tags=["endpoints"])

Deployer = Annotated[Principal, Depends(Permission(Action.DEPLOY))]
# Both ways through the scoring proxy: the caller's own x-request-id goes in (the host keeps it as the
# client's id), the host's x-request-id and the client's id come back.
PASSED_HEADERS = ("content-type", "x-request-id", "x-client-request-id", "mlgate-deployment")


def _serving(ctx: ContextDep) -> Serving:
    return ctx.serving


ServingDep = Annotated[Serving, Depends(_serving)]


def host_public(host: HostStatus) -> HostPublic:
    return HostPublic(
        environment=host.environment,
        url=host.url,
        pid=host.pid,
        running=host.running,
        restarts=host.restarts,
        started_at=host.started_at,
    )


def endpoint_public(view: EndpointView, host: HostStatus) -> EndpointPublic:
    applied = ((host.applied or {}).get("endpoints") or {}).get(view.name) or {}
    live_slots = applied.get("slots") or {}
    mirror = view.allocation.mirror
    slots = [
        SlotPublic(
            slot=s.slot,
            model=s.model,
            version=s.version,
            digest=s.digest,
            traffic=s.traffic,
            mirror_percent=mirror.percent if mirror is not None and mirror.slot == s.slot else 0.0,
            ready=host.running and (live_slots.get(s.slot) or {}).get("digest") == s.digest,
        )
        for s in view.allocation.slots
    ]
    base = host.url if host.url else None
    return EndpointPublic(
        environment=view.environment,
        name=view.name,
        description=view.description,
        origin=view.origin,
        created_by=view.created_by,
        created_at=view.created_at,
        key_prefixes=view.key_prefixes,
        revision=view.revision,
        updated_by=view.updated_by,
        updated_at=view.updated_at,
        can_roll_back=view.can_roll_back,
        slots=slots,
        mirror=view.allocation.mirror_json(),
        ready=bool(slots) and all(s.ready for s in slots),
        url=f"{base}/endpoints/{view.name}/invocations" if base else None,
        v2_url=f"{base}/v2/models/{view.name}/infer" if base else None,
        host=host_public(host),
    )


@router.get("/serving", response_model=HostPublic)
def serving_host(env: str, _: Reader, serving: ServingDep) -> HostPublic:
    """The environment's serving host: address, process, restarts."""
    return host_public(serving.status(env))


@router.get("/endpoints", response_model=EndpointsPublic)
def list_endpoints(env: str, _: Reader, ctx: ContextDep, serving: ServingDep) -> EndpointsPublic:
    host = serving.status(env)
    data = [endpoint_public(view, host) for view in endpoints.list_endpoints(ctx.db, env)]
    return EndpointsPublic(data=data, count=len(data))


@router.post("/endpoints", response_model=EndpointCreated, status_code=status.HTTP_201_CREATED)
def create_endpoint(env: str, body: EndpointCreate, principal: Deployer, serving: ServingDep) -> EndpointCreated:
    """A new endpoint with a primary and a secondary key, shown only in this answer."""
    view, keys = serving.create(env, body.name, actor=principal.name, description=body.description)
    public = endpoint_public(view, serving.status(env))
    return EndpointCreated(**public.model_dump(), keys={"primary": keys.primary, "secondary": keys.secondary})


@router.get("/endpoints/{name}", response_model=EndpointPublic)
def show_endpoint(env: str, name: str, _: Reader, ctx: ContextDep, serving: ServingDep) -> EndpointPublic:
    return endpoint_public(endpoints.get(ctx.db, env, name), serving.status(env))


@router.post("/endpoints/{name}/deployments", response_model=EndpointPublic)
def deploy(env: str, name: str, body: DeploymentCreate, principal: Deployer, serving: ServingDep) -> EndpointPublic:
    """Deploy a version into a slot; answers once the host serves it (loaded and warmed up)."""
    view = serving.deploy(
        env,
        name,
        model=body.model,
        version=body.version,
        slot=body.slot,
        traffic=body.traffic,
        mirror=float(body.mirror) if body.mirror is not None else None,
        actor=principal.name,
    )
    return endpoint_public(view, serving.status(env))


@router.put("/endpoints/{name}/traffic", response_model=EndpointPublic)
def shift_traffic(env: str, name: str, body: TrafficUpdate, principal: Deployer, serving: ServingDep) -> EndpointPublic:
    """New weights (summing to 100; slots not named get 0), and optionally the mirror."""
    mirror: Mirror | bool | None = False
    if body.mirror is not None:
        mirror = Mirror(body.mirror.slot, float(body.mirror.percent))
    elif body.clear_mirror:
        mirror = None
    view = serving.shift(env, name, body.weights, mirror=mirror, actor=principal.name)
    return endpoint_public(view, serving.status(env))


@router.post("/endpoints/{name}/rollback", response_model=EndpointPublic)
def rollback(env: str, name: str, principal: Deployer, serving: ServingDep) -> EndpointPublic:
    """Restore the allocation the live one replaced."""
    view = serving.rollback(env, name, actor=principal.name)
    return endpoint_public(view, serving.status(env))


@router.post("/endpoints/{name}/keys/{which}", response_model=KeyRotated)
def rotate_key(
    env: str, name: str, which: Literal["primary", "secondary"], principal: Deployer, serving: ServingDep
) -> KeyRotated:
    """A new key in place of the named one, shown only in this answer; the other keeps working."""
    key = serving.rotate_key(env, name, which, actor=principal.name)
    return KeyRotated(endpoint=name, environment=env, which=which, key=key, prefix=display_prefix(key))


@router.post("/endpoints/{name}/invocations")
async def score(env: str, name: str, request: Request, _: Reader, ctx: ContextDep, serving: ServingDep) -> Response:
    """Score through the control plane with an mlgate token: the host's answer, as the host gave it."""
    await to_thread.run_sync(endpoints.get, ctx.db, env, name)  # unknown endpoint: 404 from here
    body = await read_body(request, limit=ctx.settings.serving.max_body_bytes, what="the scoring request")
    url = await to_thread.run_sync(serving.backend.url, env)
    headers = {h: request.headers[h] for h in PASSED_HEADERS if h in request.headers}
    headers["authorization"] = f"Bearer {serving.internal_key}"
    assert ctx.proxy is not None
    try:
        answer = await ctx.proxy.post(f"{url}/endpoints/{name}/invocations", content=body, headers=headers)
    except Exception as exc:
        raise BackendError(f"the serving host of '{env}' did not answer: {exc}", details={"environment": env}) from exc
    passed = {h: answer.headers[h] for h in PASSED_HEADERS if h in answer.headers}
    return Response(content=answer.content, status_code=answer.status_code, headers=passed)
