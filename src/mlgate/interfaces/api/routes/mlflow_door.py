"""The door to each environment's MLflow: `/mlflow/<env>/...`, proxied to its tracking server.

Plain MLflow clients work unchanged (`MLFLOW_TRACKING_URI=<server>/mlflow/dev`, the mlgate token in
`MLFLOW_TRACKING_TOKEN`), and so does the MLflow UI at `/mlflow/<env>/` for a user signed in to the web
UI. Each request is matched to the MLflow operation it is (`domain.mlflow_operations`, the allow-list
built from MLflow's own routes) on the same decoded path the tracking server routes on, and the raw
path is forwarded as sent. Reads need any role in the environment; writes need a training role and are
possible only in the development environment: the other registries are written by promotion alone.
Refusals are in MLflow's shape (`door.answers`), so MLflow clients raise their own exceptions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, unquote

import anyio
from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from mlgate.domain import mlflow_operations as operations
from mlgate.domain.mlflow_operations import Body, Kind, Resolved
from mlgate.errors import MlgateError
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.door import answers, bodies, credentials, forward, guards, registration
from mlgate.interfaces.api.door.credentials import Caller
from mlgate.interfaces.api.door.upstream import UpstreamPool
from mlgate.services import audit
from mlgate.services.registration import authors
from mlgate.services.training import jobs

PREFIX = "/mlflow/"


@dataclass(frozen=True)
class Call:
    """One request at the door, once the caller may make it."""

    env: str
    caller: Caller
    resolved: Resolved
    upstream: str
    raw_path: str
    query: str


def _raw_path(request: Request, env: str) -> str:
    """The path after `/mlflow/<env>`, exactly as the client sent it (percent-encoding and all)."""
    raw = request.scope.get("raw_path")
    sent = raw.decode("latin-1") if isinstance(raw, bytes) else quote(request.url.path)
    head = f"{PREFIX}{env}"
    if not sent.startswith(head + "/"):
        raise answers.invalid(f"the environment in the path must be written plainly: '{PREFIX}{env}/...'")
    return sent[len(head) :]


def _admit(request: Request, ctx: AppContext, env: str, caller: Caller) -> Call:
    """What the request is and whether `caller` may make it; the upstream if it is up (no blocking).

    The caller is identified first: 401 comes before 404 (an unknown environment) and 403."""
    ctx.settings.environment(env)  # 404 for an unknown one
    raw_path = _raw_path(request, env)
    try:
        resolved = operations.resolve(request.method, raw_path)
    except operations.PathRefused as exc:
        raise answers.invalid(f"the door refuses this path: {exc}; send each segment percent-encoded once") from None
    except operations.NotAllowed as exc:
        raise answers.denied(str(exc)) from None
    credentials.authorize(request, ctx, caller, env, resolved.operation)
    query = request.scope.get("query_string", b"").decode("latin-1")
    upstream = ctx.tracking.ready_upstream(env) or ""
    return Call(env=env, caller=caller, resolved=resolved, upstream=upstream, raw_path=raw_path, query=query)


async def _admitted(request: Request, ctx: AppContext, env: str) -> Call:
    """The admitted call; off the event loop only where it must wait: a token not used a moment ago (the
    database), a tracking server not yet up (it starts at its environment's first use)."""
    caller = credentials.cached(request, ctx)
    if caller is None:
        caller = await anyio.to_thread.run_sync(credentials.identify, request, ctx)
    call = _admit(request, ctx, env, caller)
    if not call.upstream:
        upstream = await anyio.to_thread.run_sync(ctx.tracking.upstream, env)
        call = dataclasses.replace(call, upstream=upstream)
    return call


def _pool(ctx: AppContext) -> UpstreamPool:
    assert ctx.door is not None, "the door's connections are opened with the app"
    return ctx.door


def _record(ctx: AppContext, call: Call, digest: str) -> None:
    with ctx.db.write() as session:
        audit.record(
            session,
            actor=call.caller.principal.name,
            action=call.resolved.operation.audit_action,
            environment=call.env,
            subject=f"{call.resolved.operation.method} {call.resolved.path}",
            payload={"body_sha256": digest, "query": call.query[:512]},
        )


async def _streamed(request: Request, ctx: AppContext, call: Call) -> Response:
    """An artifact up- or download: the body goes through as a stream, never held here."""
    operation = call.resolved.operation
    headers = forward.request_headers(request)
    content: bytes | AsyncIterator[bytes] = b""
    if operation.kind is Kind.WRITE:
        await anyio.to_thread.run_sync(_guard, ctx, call, {})
        stream, length = await bodies.streamed(request, operation.limit, operation.name)
        headers = forward.request_headers(request, length=length)
        content = stream
    url = forward.target(call.raw_path, call.query)
    reply = await forward.send(_pool(ctx), call.env, call.upstream, request.method, url, headers, content)
    if operation.audited and reply.status < 300:
        await anyio.to_thread.run_sync(_record, ctx, call, "")
    return await forward.answer(reply, None if operation.kind is Kind.WRITE else forward.FILE_HEADERS)


def _guard(ctx: AppContext, call: Call, payload: dict[str, object]) -> dict[str, object]:
    guard = call.resolved.operation.guard
    if guard is None or guard not in guards.GUARDS:
        return payload
    write = guards.Write(
        db=ctx.db, env=call.env, principal=call.caller.principal, resolved=call.resolved, payload=payload
    )
    return guards.GUARDS[guard](write)


async def _registered(ctx: AppContext, call: Call, payload: dict[str, object]) -> Response:
    name, version = await anyio.to_thread.run_sync(
        registration.register, ctx, call.caller.principal, call.env, call.upstream, payload
    )
    url = forward.target("/api/2.0/mlflow/model-versions/get", f"name={quote(name)}&version={version}")
    reply = await forward.send(_pool(ctx), call.env, call.upstream, "GET", url, {"accept": "application/json"}, b"")
    return (await forward.whole(reply))[1]


async def _inspected(request: Request, ctx: AppContext, call: Call) -> Response:
    """A request whose body the door reads (capped), checks, and forwards as it parsed it."""
    operation = call.resolved.operation
    body = await bodies.read_capped(request, operation.limit, operation.name)
    if operation.guard == "version-create":
        return await _registered(ctx, call, bodies.json_object(body, operation.name))
    if operation.guard is not None:
        payload = bodies.json_object(body, operation.name)
        body = bodies.serialized(await anyio.to_thread.run_sync(_guard, ctx, call, payload))
    url = forward.target(call.raw_path, call.query)
    headers = forward.request_headers(request)
    reply = await forward.send(_pool(ctx), call.env, call.upstream, request.method, url, headers, body)
    if not (operation.kind is Kind.WRITE and reply.status < 300):
        return await forward.answer(reply)
    if operation.audited:
        await anyio.to_thread.run_sync(_record, ctx, call, hashlib.sha256(body).hexdigest())
    created = CREATES.get(operation.name)
    if created is None:
        return await forward.answer(reply)
    content, response = await forward.whole(reply)
    object_id = _created_id(content, created)
    if object_id:
        await anyio.to_thread.run_sync(_remember_creation, ctx, call, created, object_id)
    return response


# The operations that create what a model's authors are worked out from, and where their answer names it.
CREATES = {"runs.create": authors.RUN, "logged-models.create": authors.LOGGED_MODEL}
_CREATED_ID = {authors.RUN: ("run", "run_id"), authors.LOGGED_MODEL: ("model", "model_id")}


def _created_id(content: bytes, kind: str) -> str | None:
    outer, key = _CREATED_ID[kind]
    try:
        value = json.loads(content)[outer]["info"][key]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def _remember_creation(ctx: AppContext, call: Call, kind: str, object_id: str) -> None:
    """Who created the run or logged model (from the token: the author a registration of it will name);
    a job's runs are recorded on the job too, so the job lists exactly its runs."""
    principal = call.caller.principal
    authors.record_creation(ctx.db, env=call.env, kind=kind, object_id=object_id, principal=principal)
    if kind == authors.RUN and principal.job_id is not None:
        jobs.add_run(ctx.db, job_id=principal.job_id, run_id=object_id)


def _ui_page(request: Request, call: Call, response: Response) -> Response:
    """The MLflow UI's page, for a signed-in user: it gets the session's CSRF proof to send with writes."""
    session = call.caller.session
    if session is not None:
        response.set_cookie(
            credentials.CSRF_COOKIE,
            session.csrf,
            path=f"{PREFIX}{call.env}/",
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


async def _answer(request: Request, ctx: AppContext, env: str) -> Response:
    try:
        call = await _admitted(request, ctx, env)
        if call.resolved.operation.body is Body.STREAM:
            return await _streamed(request, ctx, call)
        response = await _inspected(request, ctx, call)
        return _ui_page(request, call, response) if call.resolved.operation.name == "ui" else response
    except answers.Refusal as refusal:
        return _refused(request, env, refusal)
    except MlgateError as exc:
        return _refused(request, env, answers.from_error(exc))


class Door:
    """The door as a plain ASGI app, mounted at `/mlflow` ahead of the API's routes: every MLflow call
    crosses it, so it skips FastAPI's dependency machinery (its permission is per MLflow operation,
    decided here from the allow-list, not declared per route)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # MLflow's UI opens no websocket through the door
            await send({"type": "websocket.close", "code": 1008})
            return
        request = Request(scope, receive)
        raw = scope.get("raw_path") or quote(scope["path"]).encode()
        env, slash, _ = raw.decode("latin-1").removeprefix(PREFIX).partition("/")
        if not env:
            known = ", ".join(request.app.state.ctx.settings.env_names)
            refusal = answers.Refusal(404, answers.RESOURCE_DOES_NOT_EXIST, f"name an environment: /mlflow/<{known}>/")
            response: Response = answers.response(refusal)
        elif not slash:  # `/mlflow/<env>`: the UI's page is `/mlflow/<env>/` (its assets are relative to it)
            response = RedirectResponse(f"{PREFIX}{quote(env)}/", status_code=307)
        else:
            response = await _answer(request, request.app.state.ctx, unquote(env))
        await response(scope, receive, send)


def mount() -> Mount:
    return Mount(PREFIX.rstrip("/"), app=Door())


def _refused(request: Request, env: str, refusal: answers.Refusal) -> Response:
    """A browser that is not signed in is sent to sign in and back; everyone else gets MLflow's error."""
    if refusal.status == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(f"/signin?next={quote(f'{PREFIX}{env}/')}", status_code=303)
    return answers.response(refusal)
