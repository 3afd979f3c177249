"""Monitor definitions: the config's declared ones synced, API-made ones, their reads, and the ground truth.

A monitor runs on its schedule over windows of an endpoint's scored traffic (`mlgate.services.monitoring.runs`)
and keeps a time series of results; its alerts fire after K breaching windows and resolve after K clean ones
(`.alerts`); the `retrain` action is `.retraining`. The labels sent here for an endpoint's requests are what
the model-performance signal is judged on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.monitoring import store
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Monitor, MonitorAlert, MonitorResult, utcnow
from mlgate.config import MonitorConfig, Settings
from mlgate.domain.permissions import SYSTEM
from mlgate.errors import ConflictError, NotFoundError, ValidationError
from mlgate.services import audit
from mlgate.services.release import endpoints

RESULTS_LIMIT = 50


@dataclass(frozen=True)
class MonitorView:
    id: int
    environment: str
    name: str
    endpoint: str
    spec: MonitorConfig
    origin: str
    firing: bool
    breaching: int
    clean: int
    last_run_at: datetime | None
    last_retrain_at: datetime | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class ResultView:
    id: int
    monitor: str
    at: datetime
    window_start: datetime | None
    window_end: datetime
    rows: int
    model: str | None
    values: dict[str, Any]
    breaches: list[dict[str, Any]]
    verdict: str


@dataclass(frozen=True)
class AlertView:
    id: int
    monitor: str
    environment: str
    state: str
    opened_at: datetime
    resolved_at: datetime | None
    breaches: list[dict[str, Any]]
    retrain_state: str
    retrain_job_id: int | None
    retrain_data: str | None
    candidate_version: int | None
    request_id: int | None
    retrain_note: str | None


def _spec(row: Monitor) -> MonitorConfig:
    return MonitorConfig.model_validate(row.spec)


def _view(row: Monitor) -> MonitorView:
    return MonitorView(
        id=row.id,
        environment=row.environment,
        name=row.name,
        endpoint=row.endpoint,
        spec=_spec(row),
        origin=row.origin,
        firing=row.firing,
        breaching=row.breaching,
        clean=row.clean,
        last_run_at=row.last_run_at,
        last_retrain_at=row.last_retrain_at,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def result_view(row: MonitorResult, monitor: str) -> ResultView:
    return ResultView(
        id=row.id,
        monitor=monitor,
        at=row.at,
        window_start=row.window_start,
        window_end=row.window_end,
        rows=row.rows,
        model=row.model,
        values=dict(row.values),
        breaches=list(row.breaches),
        verdict=row.verdict,
    )


def alert_view(row: MonitorAlert, monitor: str) -> AlertView:
    return AlertView(
        id=row.id,
        monitor=monitor,
        environment=row.environment,
        state=row.state,
        opened_at=row.opened_at,
        resolved_at=row.resolved_at,
        breaches=list(row.breaches),
        retrain_state=row.retrain_state,
        retrain_job_id=row.retrain_job_id,
        retrain_data=row.retrain_data,
        candidate_version=row.candidate_version,
        request_id=row.request_id,
        retrain_note=row.retrain_note,
    )


def find(session: Session, env: str, name: str) -> Monitor:
    """The monitor's row in this session; NotFoundError, with a hint, when there is none."""
    row = session.execute(select(Monitor).where(Monitor.environment == env, Monitor.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(
            f"no monitor '{name}' in '{env}'; see `mlgate monitor list --env {env}`",
            details={"monitor": name, "environment": env},
        )
    return row


def _stored(spec: MonitorConfig, env: str) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads(spec.model_copy(update={"environment": env}).model_dump_json())
    return stored


# -- declaring and creating ---------------------------------------------------------------------------


def ensure_declared(db: Database, settings: Settings) -> list[str]:
    """Create or update the monitors the policy config declares (the config's spec wins); their names."""
    made = []
    for spec in settings.raw.monitors:
        env = spec.environment or settings.env_names[-1]
        stored = _stored(spec, env)
        with db.write() as session:
            row = session.execute(
                select(Monitor).where(Monitor.environment == env, Monitor.name == spec.name)
            ).scalar_one_or_none()
            if row is None:
                session.add(
                    Monitor(
                        environment=env,
                        name=spec.name,
                        endpoint=spec.endpoint,
                        spec=stored,
                        origin="config",
                        firing=False,
                        breaching=0,
                        clean=0,
                        created_by=SYSTEM,
                        created_at=utcnow(),
                        updated_at=utcnow(),
                    )
                )
                audit.record(
                    session, actor=SYSTEM, action="monitor.create", environment=env, subject=f"monitor:{spec.name}"
                )
                made.append(f"{env}/{spec.name}")
            elif row.spec != stored:
                row.spec, row.endpoint, row.origin, row.updated_at = stored, spec.endpoint, "config", utcnow()
                audit.record(
                    session, actor=SYSTEM, action="monitor.update", environment=env, subject=f"monitor:{spec.name}"
                )
    return made


def create(db: Database, settings: Settings, env: str, spec: MonitorConfig, *, actor: str) -> MonitorView:
    settings.environment(env)
    if spec.environment not in (None, env):
        raise ValidationError(
            f"the monitor names environment '{spec.environment}' but is created in '{env}'",
            details={"environment": spec.environment},
        )
    endpoints.get(db, env, spec.endpoint)  # refused with a hint when there is no such endpoint
    with db.write() as session:
        exists = session.execute(
            select(Monitor.id).where(Monitor.environment == env, Monitor.name == spec.name)
        ).scalar_one_or_none()
        if exists is not None:
            raise ConflictError(f"monitor '{spec.name}' already exists in '{env}'", details={"monitor": spec.name})
        row = Monitor(
            environment=env,
            name=spec.name,
            endpoint=spec.endpoint,
            spec=_stored(spec, env),
            origin="api",
            firing=False,
            breaching=0,
            clean=0,
            created_by=actor,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="monitor.create",
            environment=env,
            subject=f"monitor:{spec.name}",
            payload={"endpoint": spec.endpoint, "signals": list(spec.signals), "action": spec.action},
        )
        return _view(row)


def list_monitors(db: Database, env: str) -> list[MonitorView]:
    with db.read() as session:
        rows = session.execute(select(Monitor).where(Monitor.environment == env).order_by(Monitor.name)).scalars()
        return [_view(r) for r in rows]


def get(db: Database, env: str, name: str) -> MonitorView:
    with db.read() as session:
        return _view(find(session, env, name))


def results(db: Database, env: str, name: str, *, limit: int = RESULTS_LIMIT) -> list[ResultView]:
    """The monitor's results, newest first."""
    with db.read() as session:
        monitor = find(session, env, name)
        rows = session.execute(
            select(MonitorResult)
            .where(MonitorResult.monitor_id == monitor.id)
            .order_by(MonitorResult.id.desc())
            .limit(limit)
        ).scalars()
        return [result_view(r, name) for r in rows]


def list_alerts(db: Database, env: str, *, name: str | None = None, state: str | None = None) -> list[AlertView]:
    """The environment's alerts (one monitor's, one state), newest first."""
    with db.read() as session:
        query = (
            select(MonitorAlert, Monitor.name)
            .join(Monitor, Monitor.id == MonitorAlert.monitor_id)
            .where(MonitorAlert.environment == env)
            .order_by(MonitorAlert.id.desc())
        )
        if name is not None:
            query = query.where(Monitor.name == name)
        if state is not None:
            query = query.where(MonitorAlert.state == state)
        return [alert_view(alert, monitor) for alert, monitor in session.execute(query)]


# -- ground truth -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackOutcome:
    accepted: int
    unknown: list[str]


MAX_FEEDBACK_ROWS = 1_000_000


def send_feedback(
    db: Database,
    settings: Settings,
    env: str,
    endpoint: str,
    *,
    request_ids: list[str],
    labels: list[float],
    actor: str,
) -> FeedbackOutcome:
    """Store ground truth for the request ids the endpoint's log holds; the others come back as unknown."""
    endpoints.get(db, env, endpoint)
    if len(request_ids) != len(labels):
        raise ValidationError(f"{len(request_ids)} request ids but {len(labels)} labels")
    if len(request_ids) > MAX_FEEDBACK_ROWS:
        raise ValidationError(f"at most {MAX_FEEDBACK_ROWS} labels per call, got {len(request_ids)}")
    root = settings.environment(env).monitoring_dir
    known = store.known_request_ids(root, endpoint, request_ids)
    pairs = [(i, float(label)) for i, label in zip(request_ids, labels, strict=True) if i in known]
    store.write_feedback(root, endpoint, [i for i, _ in pairs], [label for _, label in pairs], source=actor)
    unknown = list(dict.fromkeys(i for i in request_ids if i not in known))
    with db.write() as session:
        audit.record(
            session,
            actor=actor,
            action="monitor.feedback",
            environment=env,
            subject=f"endpoint:{endpoint}",
            payload={"accepted": len(pairs), "unknown": len(unknown)},
        )
    return FeedbackOutcome(accepted=len(pairs), unknown=unknown)
