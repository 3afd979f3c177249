"""The control plane's figures for Prometheus, read from the control database at scrape time.

Each figure is one aggregate query (counts, sums and bucket counts GROUP BY a few bounded columns) or a
read bounded by the number of monitors, so a scrape costs about the same over ten requests as over a
million. The labels are names the policy or an operator gives (environments, gates, endpoints, monitors,
channels, job kinds, features of a model's signature) and the states of mlgate's state machines: never
an id, a digest, a run or a person, so no series appears per request or per deploy.

Durations are histograms read straight from the rows' times (`adapters.sql.expressions.elapsed_seconds`):
a histogram's `_count` only grows as rows reach the state it counts, so Prometheus' `increase()` works on
it as on any counter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.expressions import elapsed_seconds
from mlgate.adapters.sql.models import (
    Job,
    ModelVersion,
    Monitor,
    MonitorAlert,
    MonitorResult,
    Notification,
    PromotionRequest,
    Rollout,
)
from mlgate.adapters.sql.queries import as_utc
from mlgate.domain import rollouts
from mlgate.domain.gates import RequestState
from mlgate.domain.jobs import FINISHED as JOBS_FINISHED
from mlgate.domain.jobs import JobState
from mlgate.domain.rollouts import RolloutState
from mlgate.services.notifications.delivery import FAILED, PENDING, SENT

# Opened to decided: people decide in minutes, hours or days; a gate's expiry is a week by default.
DECISION_BUCKETS_S = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0)
# Approved to promoted: copying a model between registries, seconds to a few minutes.
PROMOTION_BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Started to finished: a check in seconds, a training job up to its timeout (hours).
JOB_BUCKETS_S = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
# Created to finished: a blue/green swap in seconds, a canary's steps and bake time up to hours.
ROLLOUT_BUCKETS_S = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
# A model with thousands of columns would give a series per column and measure: the first ones only.
MAX_FEATURES = 200

Labels = tuple[str, ...]
Column = ColumnElement[Any] | InstrumentedAttribute[Any]
Counts = dict[Labels, int]


@dataclass(frozen=True)
class Distribution:
    """One histogram series: how many rows fell at or under each bound (cumulative), all of them, their sum."""

    cumulative: tuple[int, ...]
    count: int
    total: float


@dataclass(frozen=True)
class Durations:
    bounds: tuple[float, ...]
    series: dict[Labels, Distribution]


@dataclass(frozen=True)
class SignalValue:
    signal: str
    metric: str
    feature: str  # "" for a value of the whole window
    value: float


@dataclass(frozen=True)
class MonitorFigures:
    environment: str
    name: str
    endpoint: str
    firing: bool
    alerts: int  # opened since the monitor was made
    last_run_at: datetime | None
    verdict: str | None  # the latest window's: breach | clean | no-verdict
    values: list[SignalValue]


@dataclass(frozen=True)
class Figures:
    monitors: list[MonitorFigures]
    notifications: Counts  # (channel, state)
    oldest_pending_s: dict[str, float]  # channel: age of its oldest message not sent yet
    requests: Counts  # (gate, state)
    decisions: Durations  # (gate, decision): opened to decided
    promotions: Durations  # (gate,): approved to promoted
    jobs: Counts  # (environment, kind, state)
    job_durations: Durations  # (environment, kind, state): finished jobs, started to finished
    rollouts: Counts  # (environment, endpoint, state)
    rollout_durations: Durations  # (environment, endpoint, state): finished rollouts, created to finished


def read(db: Database, *, now: datetime, gates: Iterable[str] = ()) -> Figures:
    """Every figure, in one read transaction. `gates`: the policy's, counted (at 0) before their first request."""
    with db.read() as session:
        return Figures(
            monitors=monitor_figures(session),
            notifications=_every_state(
                _counts(session, Notification.channel, Notification.state), (PENDING, SENT, FAILED)
            ),
            oldest_pending_s=_oldest_pending(session, now),
            requests=_every_state(
                _counts(session, PromotionRequest.gate, PromotionRequest.state),
                [s.value for s in RequestState],
                groups=[(gate,) for gate in gates],
            ),
            decisions=_decisions(session),
            promotions=_promotions(session),
            jobs=_every_state(_counts(session, Job.environment, Job.kind, Job.state), [s.value for s in JobState]),
            job_durations=_durations(
                session,
                (Job.environment, Job.kind, Job.state),
                start=Job.started_at,
                end=Job.finished_at,
                bounds=JOB_BUCKETS_S,
                where=(Job.state.in_([s.value for s in JOBS_FINISHED]),),
            ),
            rollouts=_every_state(
                _counts(session, Rollout.environment, Rollout.endpoint, Rollout.state), [s.value for s in RolloutState]
            ),
            rollout_durations=_durations(
                session,
                (Rollout.environment, Rollout.endpoint, Rollout.state),
                start=Rollout.created_at,
                end=Rollout.finished_at,
                bounds=ROLLOUT_BUCKETS_S,
                where=(Rollout.state.in_(rollouts.FINISHED),),
            ),
        )


def _counts(session: Session, *columns: InstrumentedAttribute[str]) -> Counts:
    rows = session.execute(select(*columns, func.count()).group_by(*columns))
    return {tuple(str(v) for v in row[:-1]): int(row[-1]) for row in rows}


def _every_state(counts: Counts, states: Iterable[str], *, groups: Iterable[Labels] = ()) -> Counts:
    """`counts` (keyed by labels, the state last) with every state of each group seen (and of `groups`) at 0
    where no row is in it: the series exists before its first row, so a rule's `delta()` sees 0 -> 1."""
    seen = {labels[:-1] for labels in counts} | set(groups)
    return {(*group, state): 0 for group in sorted(seen) for state in states} | counts


def _durations(
    session: Session,
    columns: Sequence[Column],
    *,
    start: Column,
    end: Column,
    bounds: tuple[float, ...],
    where: Sequence[ColumnElement[bool]] = (),
    join: tuple[Any, ColumnElement[bool]] | None = None,
) -> Durations:
    """The histogram of `end - start` per value of `columns`, bucketed in the database."""
    seconds = elapsed_seconds(end, start)
    buckets = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in bounds]
    query = select(*columns, func.count(), func.sum(seconds), *buckets)
    if join is not None:
        query = query.join(*join)
    query = query.where(start.is_not(None), end.is_not(None), *where).group_by(*columns)
    width = len(columns)
    series = {}
    for row in session.execute(query):
        labels = tuple(str(v) for v in row[:width])
        cumulative = tuple(int(n or 0) for n in row[width + 2 :])
        series[labels] = Distribution(cumulative, int(row[width]), float(row[width + 1] or 0.0))
    return Durations(bounds, series)


def _decisions(session: Session) -> Durations:
    """Opened to decided, by gate and decision: approved (whatever became of the copy), rejected, expired."""
    state = PromotionRequest.state
    decision = case(
        (state == RequestState.REJECTED.value, RequestState.REJECTED.value),
        (state == RequestState.EXPIRED.value, RequestState.EXPIRED.value),
        else_=RequestState.APPROVED.value,
    ).label("decision")
    return _durations(
        session,
        (PromotionRequest.gate, decision),
        start=PromotionRequest.created_at,
        end=PromotionRequest.decided_at,
        bounds=DECISION_BUCKETS_S,
    )


def _promotions(session: Session) -> Durations:
    """Approved to promoted (the target's version record is written with the `promoted` state), by gate."""
    return _durations(
        session,
        (PromotionRequest.gate,),
        start=PromotionRequest.decided_at,
        end=ModelVersion.created_at,
        bounds=PROMOTION_BUCKETS_S,
        where=(PromotionRequest.state == RequestState.PROMOTED.value,),
        join=(ModelVersion, ModelVersion.id == PromotionRequest.target_version_id),
    )


def _oldest_pending(session: Session, now: datetime) -> dict[str, float]:
    rows = session.execute(
        select(Notification.channel, func.min(Notification.created_at))
        .where(Notification.state == PENDING)
        .group_by(Notification.channel)
    )
    return {str(channel): max(0.0, (now - as_utc(oldest)).total_seconds()) for channel, oldest in rows if oldest}


def monitor_figures(session: Session) -> list[MonitorFigures]:
    """Every monitor with its alert state and its latest window's values (one indexed lookup each)."""
    counted = session.execute(select(MonitorAlert.monitor_id, func.count()).group_by(MonitorAlert.monitor_id))
    alerts = {int(monitor_id): int(n) for monitor_id, n in counted}
    earlier = aliased(MonitorResult)
    latest = select(func.max(earlier.id)).where(earlier.monitor_id == Monitor.id).correlate(Monitor).scalar_subquery()
    rows = session.execute(
        select(Monitor, MonitorResult.verdict, MonitorResult.values)
        .outerjoin(MonitorResult, MonitorResult.id == latest)
        .order_by(Monitor.environment, Monitor.name)
    )
    return [
        MonitorFigures(
            environment=monitor.environment,
            name=monitor.name,
            endpoint=monitor.endpoint,
            firing=monitor.firing,
            alerts=int(alerts.get(monitor.id, 0)),
            last_run_at=as_utc(monitor.last_run_at),
            verdict=verdict,
            values=signal_values(values) if isinstance(values, dict) else [],
        )
        for monitor, verdict, values in rows
    ]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and (isinstance(value, bool) or math.isfinite(value))


def signal_values(values: dict[str, Any]) -> list[SignalValue]:
    """A result's numbers (`services.monitoring.evaluation`): each signal's own (`share`, `p95_ms`,
    `accuracy`...) with feature "", and each feature's (`value`, `threshold`, `drifted`, the measures).
    Booleans count 0/1; text, missing values and nested breakdowns (per slot) are left out."""
    found = []
    for signal, fields in sorted(values.items()):
        if not isinstance(fields, dict):
            continue
        for metric, value in sorted(fields.items()):
            if metric == "features" and isinstance(value, dict):
                for feature, measures in sorted(value.items())[:MAX_FEATURES]:
                    if isinstance(measures, dict):
                        found += [
                            SignalValue(signal, str(m), str(feature), float(v))
                            for m, v in sorted(measures.items())
                            if _number(v)
                        ]
            elif _number(value):
                found.append(SignalValue(signal, str(metric), "", float(value)))
    return found
