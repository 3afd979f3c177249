"""Monitors: declared in the policy config or created through the API, run on their schedule over windows
of an endpoint's scored traffic, kept as a time series of results, with alerts that fire after K
breaching windows and resolve after K clean ones (sent through the outbox), and the `retrain` action.

The reference is the baseline profile of the version serving the endpoint (the slot with the most
traffic), which promotion copied into the environment's own folder. Evaluating reads the monitoring
store's files outside any transaction; the result, the hysteresis step and the alert with its
notifications are then written in one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, Monitor, MonitorAlert, MonitorResult, utcnow
from mlgate.config import MonitorConfig, Settings
from mlgate.domain import alerts as hysteresis
from mlgate.domain.monitors import Schedule, Window, thresholds
from mlgate.domain.permissions import Role
from mlgate.errors import ConflictError, NotFoundError, ValidationError
from mlgate.monitoring import store
from mlgate.services import audit
from mlgate.services.monitoring.evaluation import Evaluation, evaluate
from mlgate.services.notifications import outbox
from mlgate.services.promotion.requests import author_of
from mlgate.services.registration import models
from mlgate.services.release import endpoints

log = logging.getLogger(__name__)

ROWS_LOOKBACK = timedelta(days=7)  # a window of the last N rows looks this far back at most
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


@dataclass(frozen=True)
class RunOutcome:
    result: ResultView
    change: str | None  # fire | resolve
    alert: AlertView | None


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


def _result_view(row: MonitorResult, monitor: str) -> ResultView:
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


def _find(session: Session, env: str, name: str) -> Monitor:
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
                        created_by="system",
                        created_at=utcnow(),
                        updated_at=utcnow(),
                    )
                )
                audit.record(
                    session, actor="system", action="monitor.create", environment=env, subject=f"monitor:{spec.name}"
                )
                made.append(f"{env}/{spec.name}")
            elif row.spec != stored:
                row.spec, row.endpoint, row.origin, row.updated_at = stored, spec.endpoint, "config", utcnow()
                audit.record(
                    session, actor="system", action="monitor.update", environment=env, subject=f"monitor:{spec.name}"
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
        return _view(_find(session, env, name))


def results(db: Database, env: str, name: str, *, limit: int = RESULTS_LIMIT) -> list[ResultView]:
    """The monitor's results, newest first."""
    with db.read() as session:
        monitor = _find(session, env, name)
        rows = session.execute(
            select(MonitorResult)
            .where(MonitorResult.monitor_id == monitor.id)
            .order_by(MonitorResult.id.desc())
            .limit(limit)
        ).scalars()
        return [_result_view(r, name) for r in rows]


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


# -- evaluating ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The version serving an endpoint, and its baseline profile (None if it has none)."""

    record_id: int
    name: str
    version: int
    profile: dict[str, Any] | None
    folder: Path

    def sample(self) -> Any:
        """The reference sample (pandas), or None."""
        import pandas as pd

        path = self.folder / "sample.csv"
        return pd.read_csv(path) if self.profile is not None and path.is_file() else None


def serving_version(db: Database, settings: Settings, env: str, endpoint: str) -> Reference | None:
    """The version in the endpoint's slot with the most traffic."""
    allocation = endpoints.get(db, env, endpoint).allocation
    if not allocation.slots:
        return None
    live = max(allocation.slots, key=lambda s: s.traffic)
    folder = models.version_dir(settings, env, live.model, live.version)
    profile_file = folder / "profile.json"
    profile = json.loads(profile_file.read_text()) if profile_file.is_file() else None
    return Reference(live.model_version_id, live.model, live.version, profile, folder)


def window_bounds(spec: MonitorConfig, now: datetime) -> tuple[datetime, datetime]:
    window = Window.parse(spec.window)
    return (now - window.duration if window.duration else now - ROWS_LOOKBACK), now


def _window_tables(root: Path, spec: MonitorConfig, now: datetime) -> tuple[Any, Any, datetime]:
    """The window's request rows and labelled rows, and where the window starts."""
    window = Window.parse(spec.window)
    since, until = window_bounds(spec, now)
    requests = store.read_requests(root, spec.endpoint, since=since, until=until)
    labelled = (
        store.labelled(root, spec.endpoint, since=since, until=until) if "model-performance" in spec.signals else None
    )
    if window.rows is not None and requests.num_rows > window.rows:
        requests = requests.sort_by([("ts", "ascending")]).slice(requests.num_rows - window.rows)
        since = requests["ts"][0].as_py()
        if labelled is not None:
            labelled = labelled.filter(_at_or_after(labelled["ts"], since))
    return requests, labelled, since


def _at_or_after(column: Any, since: datetime) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.greater_equal(column, pa.scalar(since, pa.timestamp("us", "UTC")))


def evaluate_window(
    db: Database, settings: Settings, monitor: MonitorView, *, now: datetime
) -> tuple[Evaluation, Reference | None, datetime]:
    spec = monitor.spec
    reference = serving_version(db, settings, monitor.environment, monitor.endpoint)
    root = settings.environment(monitor.environment).monitoring_dir
    requests, labelled, since = _window_tables(root, spec, now)
    evaluation = evaluate(
        signal_names=list(spec.signals),
        profile=reference.profile if reference else None,
        sample=reference.sample() if reference else None,
        requests=requests,
        labelled=labelled,
        thresholds=thresholds(spec.thresholds),
        min_rows=spec.min_rows,
        start=since.timestamp(),
        end=now.timestamp(),
    )
    return evaluation, reference, since


def _alert_payload(monitor: Monitor, alert: MonitorAlert, model: str | None) -> dict[str, Any]:
    return {
        "id": alert.id,
        "monitor": monitor.name,
        "environment": monitor.environment,
        "endpoint": monitor.endpoint,
        "state": alert.state,
        "model": model,
        "breaches": [b for b in alert.breaches if b.get("counted", True)],
        "opened_at": alert.opened_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }


def _breach_text(breaches: list[dict[str, Any]]) -> str:
    shown = [
        f"{b['signal']} {b['metric']} {b['value']:.4g} (threshold {b['threshold']:.4g})"
        for b in breaches
        if b.get("counted", True) and isinstance(b.get("value"), int | float)
    ]
    return "; ".join(shown) or "thresholds crossed"


def _recipients(session: Session, monitor: Monitor, reference: Reference | None) -> set[str]:
    operators = outbox.approvers(session, role=Role.OPERATOR.value, environment=monitor.environment, exclude=set())
    if reference is not None:
        record = session.get(ModelVersion, reference.record_id)
        if record is not None:
            operators.add(author_of(session, record))
    return operators


def run(
    db: Database, settings: Settings, env: str, name: str, *, base_url: str, now: datetime | None = None
) -> RunOutcome:
    """Evaluate the monitor's window now, record the result, and fire or resolve its alert."""
    now = now or utcnow()
    monitor = get(db, env, name)
    evaluation, reference, since = evaluate_window(db, settings, monitor, now=now)
    model = f"{reference.name}:{reference.version}" if reference else None
    breached = None if evaluation.verdict == "no-verdict" else evaluation.verdict == "breach"
    with db.write() as session:
        row = _find(session, env, name)
        result = MonitorResult(
            monitor_id=row.id,
            at=now,
            window_start=since,
            window_end=now,
            rows=evaluation.rows,
            model=model,
            values=evaluation.values,
            breaches=evaluation.breaches,
            verdict=evaluation.verdict,
        )
        session.add(result)
        session.flush()
        state = hysteresis.Hysteresis(firing=row.firing, breaching=row.breaching, clean=row.clean)
        after, change = hysteresis.step(state, breached, k=monitor.spec.consecutive)
        row.firing, row.breaching, row.clean, row.last_run_at = after.firing, after.breaching, after.clean, now
        alert: MonitorAlert | None = None
        if change is hysteresis.Change.FIRE:
            alert = MonitorAlert(
                monitor_id=row.id,
                environment=env,
                state=hysteresis.AlertState.FIRING.value,
                opened_at=now,
                opened_result_id=result.id,
                breaches=evaluation.breaches,
                retrain_state="none",
            )
            session.add(alert)
            session.flush()
            audit.record(
                session,
                actor="system",
                action="monitor.alert",
                environment=env,
                subject=f"monitor:{name}",
                payload={"alert": alert.id, "breaches": _breach_text(evaluation.breaches)},
            )
            outbox.emit_monitor(
                session,
                settings,
                event="monitor.alert",
                alert=_alert_payload(row, alert, model),
                recipients=_recipients(session, row, reference),
                base_url=base_url,
                text=(
                    f"Monitor {name} on {env}/{row.endpoint} alerts after {monitor.spec.consecutive} breaching "
                    f"window(s): {_breach_text(evaluation.breaches)}"
                ),
            )
        elif change is hysteresis.Change.RESOLVE:
            alert = session.execute(
                select(MonitorAlert)
                .where(MonitorAlert.monitor_id == row.id, MonitorAlert.state == hysteresis.AlertState.FIRING.value)
                .order_by(MonitorAlert.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if alert is not None:
                alert.state, alert.resolved_at, alert.resolved_result_id = "resolved", now, result.id
                audit.record(
                    session,
                    actor="system",
                    action="monitor.resolve",
                    environment=env,
                    subject=f"monitor:{name}",
                    payload={"alert": alert.id},
                )
                outbox.emit_monitor(
                    session,
                    settings,
                    event="monitor.resolved",
                    alert=_alert_payload(row, alert, model),
                    recipients=_recipients(session, row, reference),
                    base_url=base_url,
                    text=(
                        f"Monitor {name} on {env}/{row.endpoint} is clean again after "
                        f"{monitor.spec.consecutive} window(s)"
                    ),
                )
        return RunOutcome(
            result=_result_view(result, name),
            change=change.value if change else None,
            alert=alert_view(alert, name) if alert is not None else None,
        )


def run_due(db: Database, settings: Settings, *, base_url: str, now: datetime | None = None) -> list[RunOutcome]:
    """Run every monitor whose schedule says a run is owed; one failing does not stop the others."""
    now = now or utcnow()
    due = []
    for env in settings.env_names:
        for monitor in list_monitors(db, env):
            last = monitor.last_run_at
            if last is not None and last.tzinfo is None:  # SQLite gives naive times back
                last = last.replace(tzinfo=now.tzinfo)
            if Schedule.parse(monitor.spec.schedule).due(last, now):
                due.append(monitor)
    outcomes = []
    for monitor in due:
        try:
            outcomes.append(run(db, settings, monitor.environment, monitor.name, base_url=base_url, now=now))
        except Exception:
            log.exception("monitor %s in %s failed", monitor.name, monitor.environment)
    return outcomes


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
