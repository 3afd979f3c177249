"""Monitors of an environment: list, create, show, run one now, its results over time and its drift
report; and ground truth for an endpoint's requests, in bulk."""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, status

from mlgate.config import MonitorConfig
from mlgate.domain.monitors import thresholds
from mlgate.domain.permissions import Action, Principal
from mlgate.interfaces.api.deps import ContextDep, Permission, Reader
from mlgate.interfaces.api.schemas.monitors import (
    FeedbackCreate,
    FeedbackResult,
    MonitorAlertPublic,
    MonitorPublic,
    MonitorResultPublic,
    MonitorResultsPublic,
    MonitorRunPublic,
    MonitorsPublic,
)
from mlgate.services.monitoring import monitors, retraining, runs
from mlgate.services.monitoring.monitors import AlertView, MonitorView, ResultView

router = APIRouter(prefix="/api/v1/environments/{env}", tags=["monitors"])

Manager = Annotated[Principal, Depends(Permission(Action.MANAGE_MONITORS))]
ALERTS_SHOWN = 20


def result_public(view: ResultView) -> MonitorResultPublic:
    return MonitorResultPublic(**{k: v for k, v in dataclasses.asdict(view).items() if k != "monitor"})


def alert_public(view: AlertView) -> MonitorAlertPublic:
    return MonitorAlertPublic(**dataclasses.asdict(view))


def monitor_public(
    view: MonitorView, *, last: ResultView | None = None, alerts: list[AlertView] | None = None
) -> MonitorPublic:
    effective = thresholds(view.spec.thresholds)
    return MonitorPublic(
        environment=view.environment,
        name=view.name,
        endpoint=view.endpoint,
        origin=view.origin,
        spec=view.spec.model_dump(mode="json"),
        thresholds={k: (v if math.isfinite(v) else None) for k, v in effective.items()},
        firing=view.firing,
        breaching=view.breaching,
        clean=view.clean,
        last_run_at=view.last_run_at,
        last_retrain_at=view.last_retrain_at,
        created_by=view.created_by,
        created_at=view.created_at,
        last=result_public(last) if last else None,
        alerts=[alert_public(a) for a in alerts or []],
    )


def _last(ctx: ContextDep, env: str, name: str) -> ResultView | None:
    found = monitors.results(ctx.db, env, name, limit=1)
    return found[0] if found else None


@router.get("/monitors", response_model=MonitorsPublic)
def list_monitors(env: str, _: Reader, ctx: ContextDep) -> MonitorsPublic:
    """The environment's monitors, each with its latest result (values against thresholds)."""
    ctx.settings.environment(env)
    data = [monitor_public(m, last=_last(ctx, env, m.name)) for m in monitors.list_monitors(ctx.db, env)]
    return MonitorsPublic(data=data, count=len(data))


@router.post("/monitors", response_model=MonitorPublic, status_code=status.HTTP_201_CREATED)
def create_monitor(env: str, body: MonitorConfig, principal: Manager, ctx: ContextDep) -> MonitorPublic:
    """Create a monitor on one of the environment's endpoints (the config's `monitors` entries, by API)."""
    return monitor_public(monitors.create(ctx.db, ctx.settings, env, body, actor=principal.name))


@router.get("/monitors/{name}", response_model=MonitorPublic)
def show_monitor(env: str, name: str, _: Reader, ctx: ContextDep) -> MonitorPublic:
    """One monitor: its spec, effective thresholds, latest result and recent alerts."""
    view = monitors.get(ctx.db, env, name)
    alerts = monitors.list_alerts(ctx.db, env, name=name)[:ALERTS_SHOWN]
    return monitor_public(view, last=_last(ctx, env, name), alerts=alerts)


@router.post("/monitors/{name}/run", response_model=MonitorRunPublic)
async def run_monitor(env: str, name: str, _: Manager, ctx: ContextDep) -> MonitorRunPublic:
    """Evaluate the monitor's window now (as its schedule would): the result, and the alert it fired or
    resolved. An alert of a `retrain` monitor starts its retraining at once."""

    def work() -> runs.RunOutcome:
        outcome = runs.run(ctx.db, ctx.settings, env, name, base_url=ctx.base_url)
        if outcome.change == "fire" and outcome.alert is not None:
            retraining.start(ctx.db, ctx.settings, outcome.alert.id)
        return outcome

    outcome = await to_thread.run_sync(work)
    return MonitorRunPublic(
        result=result_public(outcome.result),
        change=outcome.change,
        alert=alert_public(outcome.alert) if outcome.alert else None,
    )


@router.get("/monitors/{name}/results", response_model=MonitorResultsPublic)
def monitor_results(
    env: str, name: str, _: Reader, ctx: ContextDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> MonitorResultsPublic:
    """The monitor's results over time, newest first."""
    data = [result_public(r) for r in monitors.results(ctx.db, env, name, limit=limit)]
    return MonitorResultsPublic(data=data, count=len(data))


@router.get("/monitors/{name}/alerts", response_model=list[MonitorAlertPublic])
def monitor_alerts(env: str, name: str, _: Reader, ctx: ContextDep) -> list[MonitorAlertPublic]:
    """The monitor's alerts, newest first, with the retraining each started."""
    monitors.get(ctx.db, env, name)
    return [alert_public(a) for a in monitors.list_alerts(ctx.db, env, name=name)]


@router.post("/endpoints/{name}/feedback", response_model=FeedbackResult)
def send_feedback(env: str, name: str, body: FeedbackCreate, principal: Manager, ctx: ContextDep) -> FeedbackResult:
    """Ground truth for the endpoint's requests, in bulk; request ids it never answered come back unknown."""
    outcome = monitors.send_feedback(
        ctx.db,
        ctx.settings,
        env,
        name,
        request_ids=body.request_ids,
        labels=body.labels,
        actor=principal.name,
    )
    return FeedbackResult(accepted=outcome.accepted, unknown=outcome.unknown)
