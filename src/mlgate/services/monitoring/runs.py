"""Running a monitor: its window of an endpoint's scored traffic evaluated, the result kept, the alert stepped.

The reference is the baseline profile of the version serving the endpoint (the slot with the most
traffic), which promotion copied into the environment's own folder. Evaluating reads the monitoring
store's files outside any transaction; the result, the hysteresis step and the alert with its
notifications (`mlgate.services.monitoring.alerts`) are then written in one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from mlgate.adapters.monitoring import store
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Monitor, MonitorAlert, MonitorResult, utcnow
from mlgate.adapters.sql.queries import as_utc
from mlgate.config import MonitorConfig, Settings
from mlgate.domain import alerts as hysteresis
from mlgate.domain.events import AlertFired
from mlgate.domain.monitors import Schedule, Window, thresholds
from mlgate.services.events import NO_EVENTS, Publisher
from mlgate.services.monitoring import alerts, monitors
from mlgate.services.monitoring.evaluation import Evaluation, evaluate
from mlgate.services.monitoring.monitors import AlertView, MonitorView, ResultView
from mlgate.services.monitoring.window import NOT_EVALUATED, WindowInputs, from_rows, read_window
from mlgate.services.registration import models
from mlgate.services.release import endpoints

log = logging.getLogger(__name__)

ROWS_LOOKBACK = timedelta(days=7)  # a window of the last N rows looks this far back at most


@dataclass(frozen=True)
class RunOutcome:
    result: ResultView
    change: str | None  # fire | resolve
    alert: AlertView | None


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


PERFORMANCE_COLUMNS = ["ts", "row", store.PREDICTION]  # what model performance reads of a labelled row


def window_bounds(spec: MonitorConfig, now: datetime) -> tuple[datetime, datetime]:
    window = Window.parse(spec.window)
    return (now - window.duration if window.duration else now - ROWS_LOOKBACK), now


def _settled_before(settings: Settings, now: datetime) -> datetime:
    """Hours that ended before this have been compacted: their summaries will not go stale."""
    monitoring = settings.raw.monitoring
    return now - timedelta(seconds=monitoring.compact_after_s + monitoring.upkeep_interval_s)


def _window_tables(
    settings: Settings, env: str, spec: MonitorConfig, profile: dict[str, Any] | None, now: datetime
) -> tuple[WindowInputs, Any, datetime]:
    """The window's inputs and labelled rows, and where the window starts."""
    environment = settings.environment(env)
    root = environment.monitoring_dir
    window = Window.parse(spec.window)
    since, until = window_bounds(spec, now)
    labelled = (
        store.labelled(root, spec.endpoint, since=since, until=until, columns=PERFORMANCE_COLUMNS)
        if "model-performance" in spec.signals
        else None
    )
    if window.rows is None:
        inputs = read_window(
            root,
            environment.summary_dir,
            spec.endpoint,
            since=since,
            until=until,
            profile=profile,
            settled_before=_settled_before(settings, now),
        )
        return inputs, labelled, since
    requests = store.read_requests(root, spec.endpoint, since=since, until=until, exclude=NOT_EVALUATED)
    if requests.num_rows > window.rows:
        requests = requests.sort_by([("ts", "ascending")]).slice(requests.num_rows - window.rows)
        since = requests["ts"][0].as_py()
        if labelled is not None:
            labelled = labelled.filter(_at_or_after(labelled["ts"], since))
    return from_rows(requests, profile), labelled, since


def _at_or_after(column: Any, since: datetime) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.greater_equal(column, pa.scalar(since, pa.timestamp("us", "UTC")))


def evaluate_window(
    db: Database, settings: Settings, monitor: MonitorView, *, now: datetime
) -> tuple[Evaluation, Reference | None, datetime]:
    """The monitor's window up to `now` evaluated against the serving version's baseline; that version, and
    where the window starts."""
    spec = monitor.spec
    reference = serving_version(db, settings, monitor.environment, monitor.endpoint)
    profile = reference.profile if reference else None
    inputs, labelled, since = _window_tables(settings, monitor.environment, spec, profile, now)
    evaluation = evaluate(
        signal_names=list(spec.signals),
        profile=profile,
        sample=reference.sample() if reference else None,
        window=inputs,
        labelled=labelled,
        thresholds=thresholds(spec.thresholds),
        min_rows=spec.min_rows,
        start=since.timestamp(),
        end=now.timestamp(),
    )
    return evaluation, reference, since


def _record(
    session: Session, row: Monitor, evaluation: Evaluation, *, since: datetime, now: datetime, model: str | None
) -> MonitorResult:
    """The window's result, added to the monitor's time series (flushed: it has its id)."""
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
    return result


def run(
    db: Database, settings: Settings, env: str, name: str, *, base_url: str, now: datetime | None = None
) -> RunOutcome:
    """Evaluate the monitor's window now, record the result, and fire or resolve its alert."""
    now = now or utcnow()
    monitor = monitors.get(db, env, name)
    evaluation, reference, since = evaluate_window(db, settings, monitor, now=now)
    model = f"{reference.name}:{reference.version}" if reference else None
    record_id = reference.record_id if reference else None
    consecutive = monitor.spec.consecutive
    breached = None if evaluation.verdict == "no-verdict" else evaluation.verdict == "breach"
    with db.write() as session:
        row = monitors.find(session, env, name)
        result = _record(session, row, evaluation, since=since, now=now, model=model)
        state = hysteresis.Hysteresis(firing=row.firing, breaching=row.breaching, clean=row.clean)
        after, change = hysteresis.step(state, breached, k=consecutive)
        row.firing, row.breaching, row.clean, row.last_run_at = after.firing, after.breaching, after.clean, now
        alert: MonitorAlert | None = None
        if change is hysteresis.Change.FIRE:
            alert = alerts.fire(
                session,
                settings,
                row,
                result=result,
                breaches=evaluation.breaches,
                model=model,
                record_id=record_id,
                consecutive=consecutive,
                base_url=base_url,
                now=now,
            )
        elif change is hysteresis.Change.RESOLVE:
            alert = alerts.resolve(
                session,
                settings,
                row,
                result=result,
                model=model,
                record_id=record_id,
                consecutive=consecutive,
                base_url=base_url,
                now=now,
            )
        return RunOutcome(
            result=monitors.result_view(result, name),
            change=change.value if change else None,
            alert=monitors.alert_view(alert, name) if alert is not None else None,
        )


def run_due(
    db: Database,
    settings: Settings,
    *,
    base_url: str,
    now: datetime | None = None,
    events: Publisher = NO_EVENTS,
) -> list[RunOutcome]:
    """Run every monitor whose schedule says a run is owed at `now` (the server's clock); one failing does
    not stop the others. Each alert a run fires is announced (`AlertFired`: its retraining starts)."""
    now = now or utcnow()
    due = []
    for env in settings.env_names:
        for monitor in monitors.list_monitors(db, env):
            last = as_utc(monitor.last_run_at)
            if Schedule.parse(monitor.spec.schedule).due(last, now):
                due.append(monitor)
    outcomes = []
    for monitor in due:
        try:
            outcome = run(db, settings, monitor.environment, monitor.name, base_url=base_url, now=now)
        except Exception:
            log.exception("monitor %s in %s failed", monitor.name, monitor.environment)
            continue
        outcomes.append(outcome)
        if outcome.change == "fire" and outcome.alert is not None:
            alert = outcome.alert
            events.publish(AlertFired(alert_id=alert.id, environment=alert.environment, monitor=alert.monitor))
    return outcomes
