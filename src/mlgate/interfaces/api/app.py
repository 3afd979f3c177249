"""`create_app`: the control plane's FastAPI application, built by a factory, never at import."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
from anyio import to_thread
from fastapi import FastAPI

import mlgate
from mlgate.adapters.execution.base import ExecutionBackend, backend
from mlgate.adapters.mlflow.registry import MlflowRegistry
from mlgate.adapters.mlflow.tracking_servers import LocalTrackingServers, TrackingServers
from mlgate.adapters.mlflow.unix_transport import AsyncUnixRoutes
from mlgate.adapters.serving.base import ServingBackend
from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.interfaces import web
from mlgate.interfaces.api import errors
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.routes import (
    audit,
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
from mlgate.services.monitoring import monitors as monitors_service
from mlgate.services.monitoring import retraining
from mlgate.services.notifications.delivery import DeliveryWorker
from mlgate.services.promotion import requests as requests_service
from mlgate.services.promotion.copying import PromotionWorker
from mlgate.services.release.rollouts import RolloutWorker
from mlgate.services.release.serving import Serving
from mlgate.services.scheduler import Periodic
from mlgate.services.staging.pipeline import StagingPipeline
from mlgate.services.training.job_runner import JobRunner

log = logging.getLogger(__name__)

EXPIRY_SWEEP_S = 5.0
MONITOR_TICK_S = 5.0  # schedules are checked this often; a retraining's job, too
PROXY_TIMEOUT = httpx.Timeout(300.0, connect=5.0)


def write_server_record(ctx: AppContext, *, children: list[int]) -> None:
    """Record where this server answers, so the CLI run inside the project finds it and `stop` stops it."""
    record = {
        "pid": os.getpid(),
        "url": ctx.base_url,
        "public_url": ctx.public_url,
        "config": str(ctx.settings.config_path),
        "started_at": datetime.now(UTC).isoformat(),
        "children": children,
    }
    path = ctx.settings.server_json
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def create_app(
    settings: Settings,
    *,
    base_url: str,
    tracking: TrackingServers | None = None,
    execution: ExecutionBackend | None = None,
    serving: ServingBackend | None = None,
    record_server: bool = False,
) -> FastAPI:
    """The app; `tracking` defaults to real MLflow servers, `execution` to local subprocesses, `serving`
    to local serving-host processes; `record_server` writes server.json."""
    db = Database(settings.database_url)
    ctx = AppContext(
        settings=settings,
        db=db,
        tracking=tracking or LocalTrackingServers(settings),
        base_url=base_url.rstrip("/"),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if migrate.upgrade(db):
            log.info("control database migrated to %s", migrate.head_revision())
        ctx.tracking.start()
        # the door's client: a tracking server's pseudo URL goes over its Unix socket
        ctx.proxy = httpx.AsyncClient(timeout=PROXY_TIMEOUT, transport=AsyncUnixRoutes())
        runner = JobRunner(settings=settings, db=db, backend=execution or backend("local"), base_url=ctx.base_url)
        runner.start()
        promotion = PromotionWorker(settings, db, ctx.tracking, ctx.base_url)  # copies approved versions
        promotion.start()
        ctx.on_approved = promotion.wake
        delivery = DeliveryWorker(settings=settings, db=db)  # sends the outbox's email and webhooks
        delivery.start()
        expiry = Periodic(
            "request-expiry",
            lambda: requests_service.expire_due(db, settings, base_url=ctx.base_url),
            interval_s=EXPIRY_SWEEP_S,
        )
        expiry.start()
        if serving is None:
            from mlgate.adapters.serving.local import LocalServingBackend

            hosts: ServingBackend = LocalServingBackend(settings)
        else:
            hosts = serving
        ctx.serving = Serving(settings, db, hosts, ctx.tracking.upstream)
        await to_thread.run_sync(ctx.serving.start)
        # gate B requests and checks for versions arriving in staging
        pipeline = StagingPipeline(settings, db, ctx.serving, ctx.tracking, base_url=ctx.base_url)
        pipeline.start()
        ctx.on_checks = pipeline.wake
        # production rollouts of versions that passed gate B
        rollout_worker = RolloutWorker(settings, db, ctx.serving, ctx.tracking, base_url=ctx.base_url)
        rollout_worker.start()
        # monitors: the declared ones synced, each run on its schedule; alerts carry their retraining on
        await to_thread.run_sync(monitors_service.ensure_declared, db, settings)

        def monitor_tick() -> None:
            monitors_service.run_due(db, settings, base_url=ctx.base_url)
            retraining.sweep(
                db,
                settings,
                registry_for=lambda env: MlflowRegistry(ctx.tracking.upstream(env), env=env),
                base_url=ctx.base_url,
            )

        monitor_worker = Periodic("monitors", monitor_tick, interval_s=MONITOR_TICK_S)
        monitor_worker.start()
        if record_server:
            children = [int(str(s["pid"])) for s in ctx.tracking.status().values() if s.get("pid")]
            write_server_record(ctx, children=children)
        try:
            yield
        finally:
            monitor_worker.stop()
            rollout_worker.stop()
            ctx.on_checks = None
            pipeline.stop()
            if ctx.serving is not None:
                ctx.serving.stop()  # the hosts keep serving: `mlgate stop` stops them
            expiry.stop()
            delivery.stop()
            ctx.on_approved = None
            promotion.stop()
            runner.stop()
            await ctx.proxy.aclose()
            ctx.tracking.stop()
            if record_server:
                settings.server_json.unlink(missing_ok=True)
            db.dispose()

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
    for module in (
        system,
        environments,
        users,
        audit,
        data,
        jobs,
        models,
        requests,
        checks,
        endpoints,
        rollouts,
        monitors,
        notifications,
        mlflow_door,
    ):
        app.include_router(module.router)
    web.install(app)  # the web UI at /: its pages and /static
    return app
