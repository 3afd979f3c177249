"""`create_app`: the control plane's FastAPI application, built by a factory, never at import.

The parts behind it are built and wired by the composition root, `mlgate.server.control_plane`; this
module adds the HTTP side: the routers, the error handlers, the web UI and the MLflow door's client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from anyio import to_thread
from fastapi import FastAPI

import mlgate
from mlgate.adapters.execution.base import ExecutionBackend
from mlgate.adapters.mlflow.base import TrackingServers
from mlgate.adapters.mlflow.unix_transport import AsyncUnixRoutes
from mlgate.adapters.serving.base import ServingBackend
from mlgate.config import Settings
from mlgate.domain.clock import SYSTEM_CLOCK, Clock
from mlgate.interfaces import web
from mlgate.interfaces.api import errors, prometheus
from mlgate.interfaces.api.body_limits import BodyLimits, RouteLimit, upload_limit
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.door.upstream import UpstreamPool
from mlgate.interfaces.api.routes import (
    audit,
    audit_history,
    checks,
    data,
    endpoints,
    environments,
    jobs,
    mlflow_door,
    models,
    monitors,
    notifications,
    requests,
    rollouts,
    system,
    users,
)
from mlgate.interfaces.api.routes.data import MAX_DATA_BYTES
from mlgate.server.control_plane import Backends, ControlPlane
from mlgate.snapshot import MAX_SNAPSHOT_BYTES

PROXY_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
ROUTERS = (
    system,
    environments,
    users,
    audit,
    audit_history,
    data,
    jobs,
    models,
    requests,
    checks,
    endpoints,
    rollouts,
    monitors,
    notifications,
)


def create_app(
    settings: Settings,
    *,
    base_url: str,
    tracking: TrackingServers | None = None,
    execution: ExecutionBackend | None = None,
    serving: ServingBackend | None = None,
    clock: Clock = SYSTEM_CLOCK,
    record_server: bool = False,
) -> FastAPI:
    """The app; each backend not given is the one the config names (`adapters.registry`);
    `record_server` writes server.json."""
    backends = Backends.chosen(settings, tracking=tracking, execution=execution, serving=serving)
    plane = ControlPlane(settings, base_url=base_url, backends=backends, clock=clock, record_server=record_server)
    ctx = AppContext(
        settings=settings,
        db=plane.db,
        tracking=plane.tracking,
        base_url=plane.base_url,
        events=plane.hub,
        serving=plane.serving,
        plane=plane,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # the door's client: a tracking server's pseudo URL goes over its Unix socket
        ctx.proxy = httpx.AsyncClient(timeout=PROXY_TIMEOUT, transport=AsyncUnixRoutes())
        ctx.door = UpstreamPool()
        await to_thread.run_sync(plane.start)
        try:
            yield
        finally:
            await to_thread.run_sync(plane.stop)
            await ctx.proxy.aclose()
            ctx.door.close()

    app = FastAPI(
        title="mlgate",
        version=mlgate.__version__,
        description="Self-hosted MLOps control plane",
        openapi_url=None,  # served by our own route, which declares its permission like every other
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    errors.install(app)
    app.router.routes.append(mlflow_door.mount())  # first: every MLflow call crosses it
    gates = [gate.name for gate in settings.gates]
    scrape = prometheus.scrape_route(plane.db, plane.clock, expected_hash=plane.serving.metrics_token_hash, gates=gates)
    app.router.routes.append(scrape)  # /metrics, for Prometheus with the metrics token
    for module in ROUTERS:
        app.include_router(module.router, responses=errors.RESPONSES)
    web.install(app)  # the web UI at /: its pages and /static
    app.add_middleware(BodyLimits, uploads=upload_limits(settings))
    return app


def upload_limits(settings: Settings) -> list[RouteLimit]:
    """The `/api/v1` routes whose bodies may be larger than a JSON document, each with its own cap."""
    env, scoring = "/api/v1/environments/[^/]+", settings.serving.max_body_bytes
    return [
        upload_limit("POST", f"{env}/snapshots", MAX_SNAPSHOT_BYTES, "the code snapshot"),
        upload_limit("PUT", f"{env}/data/[^/]+", MAX_DATA_BYTES, "the data upload"),
        upload_limit("POST", f"{env}/endpoints/[^/]+/invocations", scoring, "the scoring request"),
    ]
