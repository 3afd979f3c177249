"""A monitor's alerts fired and resolved: the alert row, its audit entry, and the notifications in the outbox.

Called inside the transaction that records the run's result (`mlgate.services.monitoring.runs`), so the
result, the hysteresis step, the alert and its notifications are written together. The notice goes to the
environment's operators and to the author of the model serving the endpoint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.models import ModelVersion, Monitor, MonitorAlert, MonitorResult
from mlgate.config import Settings
from mlgate.domain import alerts as hysteresis
from mlgate.domain.permissions import SYSTEM, Role
from mlgate.domain.retraining import RetrainState
from mlgate.services import audit
from mlgate.services.notifications import outbox
from mlgate.services.promotion.evidence import author_of


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


def _recipients(session: Session, monitor: Monitor, record_id: int | None) -> set[str]:
    """The environment's operators and the author of the serving version (`record_id`), if one serves."""
    operators = outbox.approvers(session, role=Role.OPERATOR.value, environment=monitor.environment, exclude=set())
    if record_id is not None:
        record = session.get(ModelVersion, record_id)
        if record is not None:
            operators.add(author_of(session, record))
    return operators


def fire(
    session: Session,
    settings: Settings,
    monitor: Monitor,
    *,
    result: MonitorResult,
    breaches: list[dict[str, Any]],
    model: str | None,
    record_id: int | None,
    consecutive: int,
    base_url: str,
    now: datetime,
) -> MonitorAlert:
    """Open the monitor's alert on `result` (its retraining not started), audit it and notify."""
    alert = MonitorAlert(
        monitor_id=monitor.id,
        environment=monitor.environment,
        state=hysteresis.AlertState.FIRING.value,
        opened_at=now,
        opened_result_id=result.id,
        breaches=breaches,
        retrain_state=RetrainState.NONE.value,
    )
    session.add(alert)
    session.flush()
    _announce(
        session,
        settings,
        monitor,
        alert,
        change=("monitor.alert", "monitor.alert"),
        payload={"alert": alert.id, "breaches": _breach_text(breaches)},
        model=model,
        record_id=record_id,
        base_url=base_url,
        text=(
            f"Monitor {monitor.name} on {monitor.environment}/{monitor.endpoint} alerts after {consecutive} "
            f"breaching window(s): {_breach_text(breaches)}"
        ),
    )
    return alert


def resolve(
    session: Session,
    settings: Settings,
    monitor: Monitor,
    *,
    result: MonitorResult,
    model: str | None,
    record_id: int | None,
    consecutive: int,
    base_url: str,
    now: datetime,
) -> MonitorAlert | None:
    """Resolve the monitor's latest firing alert on `result`, audit it and notify; None if none is firing."""
    alert = session.execute(
        select(MonitorAlert)
        .where(MonitorAlert.monitor_id == monitor.id, MonitorAlert.state == hysteresis.AlertState.FIRING.value)
        .order_by(MonitorAlert.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if alert is None:
        return None
    alert.state, alert.resolved_at, alert.resolved_result_id = hysteresis.AlertState.RESOLVED.value, now, result.id
    _announce(
        session,
        settings,
        monitor,
        alert,
        change=("monitor.resolve", "monitor.resolved"),
        payload={"alert": alert.id},
        model=model,
        record_id=record_id,
        base_url=base_url,
        text=(
            f"Monitor {monitor.name} on {monitor.environment}/{monitor.endpoint} is clean again after "
            f"{consecutive} window(s)"
        ),
    )
    return alert


def _announce(
    session: Session,
    settings: Settings,
    monitor: Monitor,
    alert: MonitorAlert,
    *,
    change: tuple[str, str],
    payload: dict[str, Any],
    model: str | None,
    record_id: int | None,
    base_url: str,
    text: str,
) -> None:
    """An alert's change (its audit action, its notification event) audited and sent to its recipients."""
    action, event = change
    subject = f"monitor:{monitor.name}"
    audit.record(
        session, actor=SYSTEM, action=action, environment=monitor.environment, subject=subject, payload=payload
    )
    outbox.emit_monitor(
        session,
        settings,
        event=event,
        alert=_alert_payload(monitor, alert, model),
        recipients=_recipients(session, monitor, record_id),
        base_url=base_url,
        text=text,
    )
