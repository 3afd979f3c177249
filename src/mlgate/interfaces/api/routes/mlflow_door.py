"""The door to each environment's MLflow: `/mlflow/<env>/...`, proxied to its tracking server.

Plain MLflow clients work unchanged (`MLFLOW_TRACKING_URI=<server>/mlflow/dev`, the mlgate token in
`MLFLOW_TRACKING_TOKEN`). Reads need any role in the environment; writes need a training role and
are possible only in the development environment: the other registries are written by promotion alone.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import anyio
import httpx
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from mlgate.domain.environments import EnvironmentKind
from mlgate.domain.permissions import Action, Principal
from mlgate.errors import AuthenticationError, BackendError, PermissionDeniedError, ValidationError
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.deps import ContextDep, Permission, bearer_token
from mlgate.services import audit
from mlgate.services.identity import accounts
from mlgate.services.training import jobs

router = APIRouter(tags=["mlflow"])

RESERVED_TAG = "mlgate."
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
# MLflow operations sent as POST that only read.
READ_ONLY_POSTS = ("/search", "/search-datasets", "/get-history-bulk-interval", "/batch-get")
# Writes worth an audit event: those that create, delete or rename things, not every logged metric.
AUDITED_WRITES = (
    "experiments/create",
    "experiments/delete",
    "experiments/restore",
    "experiments/update",
    "runs/create",
    "runs/delete",
    "runs/restore",
    "registered-models/create",
    "registered-models/delete",
    "registered-models/rename",
    "registered-models/alias",
    "model-versions/create",
    "model-versions/delete",
    "model-versions/transition-stage",
    "logged-models",
)
HOP_BY_HOP = {
    "authorization",
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def is_write(method: str, path: str) -> bool:
    if method in ("GET", "HEAD"):
        return False
    return not (method == "POST" and path.rstrip("/").endswith(READ_ONLY_POSTS))


class MlflowDoor(Permission):
    """Reads need any role bound to the environment; writes are training, in development only."""

    def __init__(self) -> None:
        super().__init__(Action.READ)

    def action_for(self, request: Request) -> Action:
        path = request.path_params.get("path", "")
        return Action.TRAIN if is_write(request.method, path) else Action.READ

    def reaches(self, scope: str, environment: str | None) -> bool:
        return scope == f"mlflow:{environment}"

    def __call__(self, request: Request, ctx: ContextDep) -> Principal:
        env = request.path_params["env"]
        development = env in ctx.settings.env_names and (
            ctx.settings.environment(env).kind is EnvironmentKind.DEVELOPMENT
        )
        if self.action_for(request) is Action.TRAIN and not development:
            # Authenticate first: 401 comes before 404 (an unknown environment) and 403.
            token = bearer_token(request)
            if token is None:
                raise AuthenticationError("missing credential: send 'Authorization: Bearer <mlgate token>'")
            principal = accounts.authenticate(ctx.db, token)
            ctx.settings.environment(env)  # 404 for an unknown one
            raise PermissionDeniedError(
                f"{principal.name} may not do this: '{Action.TRAIN}' in '{env}' is not allowed for any "
                f"role: '{env}' is written only by promotion, not through its MLflow store",
                details={"action": Action.TRAIN.value, "environment": env, "user": principal.name},
            )
        return super().__call__(request, ctx)


def _attribute_run(body: bytes, principal: Principal, lineage: dict[str, str]) -> bytes:
    """Runs created through the door carry the mlgate user as their author, not the client's OS user,
    and a job's runs carry its lineage (job, code snapshot, git commit, data versions) as tags."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return body
    if not isinstance(payload, dict):
        return body
    ours = {"mlflow.user": principal.name, **lineage}
    payload["user_id"] = principal.name
    tags = [
        t
        for t in payload.get("tags") or []
        if isinstance(t, dict) and t.get("key") not in ours and not str(t.get("key", "")).startswith(RESERVED_TAG)
    ]
    payload["tags"] = [*tags, *({"key": k, "value": v} for k, v in ours.items())]
    return json.dumps(payload).encode()


def _check_reserved_tags(path: str, body: bytes) -> None:
    """Tags under `mlgate.` are lineage mlgate vouches for: nobody sets or deletes them through the door."""
    if not path.rstrip("/").endswith(("runs/set-tag", "runs/log-batch", "runs/delete-tag")):
        return
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return
    if not isinstance(payload, dict):
        return
    keys = [str(payload.get("key", ""))] + [
        str(t.get("key", "")) for t in payload.get("tags") or [] if isinstance(t, dict)
    ]
    reserved = sorted(k for k in keys if k.startswith(RESERVED_TAG))
    if reserved:
        raise ValidationError(
            f"tags starting with '{RESERVED_TAG}' are set by mlgate only: {', '.join(reserved)}",
            details={"tags": reserved},
        )


def _created_run_id(content: bytes) -> str | None:
    try:
        run_id = json.loads(content)["run"]["info"]["run_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return run_id if isinstance(run_id, str) else None


def _audited(path: str) -> str | None:
    for operation in AUDITED_WRITES:
        if path.rstrip("/").endswith(operation):
            return "mlflow." + operation.replace("/", ".")
    return None


async def _record(ctx: AppContext, principal: Principal, env: str, action: str, path: str, body: bytes) -> None:
    def write() -> None:
        with ctx.db.write() as session:
            audit.record(
                session,
                actor=principal.name,
                action=action,
                environment=env,
                subject=path,
                payload={"body_sha256": hashlib.sha256(body).hexdigest()},
            )

    await anyio.to_thread.run_sync(write)


@router.api_route("/mlflow/{env}/{path:path}", methods=METHODS, include_in_schema=False)
async def mlflow_door(
    env: str,
    path: str,
    request: Request,
    principal: Annotated[Principal, Depends(MlflowDoor())],
    ctx: ContextDep,
) -> Response:
    assert ctx.proxy is not None
    body = await request.body()
    write = is_write(request.method, path)
    creates_run = write and path.rstrip("/").endswith("runs/create")
    if write:
        _check_reserved_tags(path, body)
    if creates_run:
        lineage = {}
        if principal.job_id is not None:
            job_id = principal.job_id
            lineage = await anyio.to_thread.run_sync(lambda: jobs.lineage_tags(ctx.db, job_id))
        body = _attribute_run(body, principal, lineage)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    # A pseudo URL: ctx.proxy's transport (unix_transport.AsyncUnixRoutes) sends it over the tracking
    # server's Unix socket, which only the control plane can reach.
    # (off the event loop: the environment's server starts at its first use, which takes seconds)
    upstream = await anyio.to_thread.run_sync(ctx.tracking.upstream, env)
    outgoing = ctx.proxy.build_request(
        request.method,
        f"{upstream}/{path}",
        params=request.url.query,
        headers=headers,
        content=body,
    )
    try:
        reply = await ctx.proxy.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise BackendError(
            f"the MLflow tracking server of '{env}' is not answering (it may be restarting): {exc}",
            details={"environment": env},
        ) from exc
    action = _audited(path) if write else None
    if action and reply.status_code < 300:
        await _record(ctx, principal, env, action, path, body)
    if creates_run and principal.job_id is not None and reply.status_code < 300:
        # A job's runs are recorded on the job as they are created, so the job lists exactly its runs.
        content = await reply.aread()
        await reply.aclose()
        run_id, job_id = _created_run_id(content), principal.job_id
        if run_id:
            await anyio.to_thread.run_sync(lambda: jobs.add_run(ctx.db, job_id=job_id, run_id=run_id))
        kept = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        return Response(content, status_code=reply.status_code, headers=kept)
    reply_headers = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP - {"content-length"}}
    return StreamingResponse(
        reply.aiter_raw(),
        status_code=reply.status_code,
        headers=reply_headers,
        background=BackgroundTask(reply.aclose),
    )
