"""The notification outbox: messages written in the same transaction as the change they announce.

`emit` turns one event into rows, one per recipient and channel (in-app inbox, email, webhook); the
delivery worker (`services.notifications.delivery`) sends the pending ones and retries with backoff. The rows are
the delivery log.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.models import CheckRecord, Notification, PromotionRequest, RoleBinding, User, utcnow
from mlgate.config import Settings
from mlgate.config.schema import WebhookConfig
from mlgate.domain.permissions import ALL_ENVIRONMENTS

EVENTS = (
    "request.opened",
    "request.approved",
    "request.rejected",
    "request.promoted",
    "request.failed",
    "request.expired",
    "request.checks-failed",
    "rollout.succeeded",
    "rollout.failed",
    "monitor.alert",
    "monitor.resolved",
    "identity.role-granted",
    "identity.token-issued",
    "audit.checkpoint",
)
# Events only the webhooks that name them take (a webhook without `events` takes all the others): an
# auditor's sink asks for the audit log's checkpoints; a team's chat does not want one every ten minutes.
NAMED_ONLY = frozenset({"audit.checkpoint"})


def request_link(settings: Settings, request_id: int, base_url: str) -> str:
    return f"{settings.public_url or base_url}/requests/{request_id}"


def _people(session: Session, names: set[str]) -> list[User]:
    if not names:
        return []
    return list(session.execute(select(User).where(User.name.in_(names), User.kind == "human")).scalars())


def approvers(session: Session, *, role: str, environment: str, exclude: set[str]) -> set[str]:
    """Names of the people holding `role` in `environment` (or everywhere), minus the interested parties."""
    rows = session.execute(
        select(User.name)
        .join(RoleBinding, RoleBinding.user_id == User.id)
        .where(
            RoleBinding.role == role,
            RoleBinding.environment.in_([environment, ALL_ENVIRONMENTS]),
            User.kind == "human",
            User.disabled_at.is_(None),
        )
    ).scalars()
    return set(rows) - exclude


MAX_SUMMARY_METRICS = 20


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def evidence_summary(session: Session, request: PromotionRequest) -> dict[str, Any]:
    """The evidence in brief, for messages: digest, each required check's latest status, metrics, and
    the metric deltas against the version serving in the target environment (if any)."""
    evidence = _dict(request.evidence)
    latest: dict[str, str] = {
        name: status
        for name, status in session.execute(
            select(CheckRecord.name, CheckRecord.status)
            .where(CheckRecord.model_version_id == request.model_version_id)
            .order_by(CheckRecord.id)
        )
    }
    metrics = _dict(evidence.get("metrics"))
    comparison = _dict(evidence.get("comparison"))
    champion = _dict(comparison.get("champion"))
    rows: list[Any] = comparison["metrics"] if isinstance(comparison.get("metrics"), list) else []
    return {
        "digest": evidence.get("digest"),
        "checks": {name: latest.get(name, "missing") for name in request.required_checks},
        "metrics": dict(list({k: v for k, v in metrics.items() if _number(v)}.items())[:MAX_SUMMARY_METRICS]),
        "champion": f"{champion.get('name')}:{champion.get('version')}" if champion else None,
        "deltas": {
            str(row["metric"]): row["delta"] for row in rows if isinstance(row, dict) and _number(row.get("delta"))
        },
        "approver_role": request.approver_role,
        "approvals": request.required_approvals,
    }


def _text(event: str, request: PromotionRequest, link: str, note: str | None) -> str:
    what = f"{request.model_name}:{request.source_version} {request.source_env} -> {request.target_env}"
    verbs = {
        "request.opened": f"Promotion request {request.id} waits for your decision: {what} (gate {request.gate})",
        "request.approved": f"Promotion request {request.id} approved: {what}",
        "request.rejected": f"Promotion request {request.id} rejected: {what}",
        "request.promoted": f"Promoted: {what} as version {request.target_version} (request {request.id})",
        "request.failed": f"Promotion request {request.id} failed: {what}",
        "request.expired": f"Promotion request {request.id} expired without a decision: {what}",
        "request.checks-failed": f"A required check did not pass on promotion request {request.id}: {what}",
    }
    text = verbs[event]
    if note:
        text += f". {note}"
    return f"{text}. {link}"


def emit(
    session: Session,
    settings: Settings,
    *,
    event: str,
    request: PromotionRequest,
    recipients: set[str],
    base_url: str,
    note: str | None = None,
) -> list[Notification]:
    """Queue `event` about `request` for each recipient (inbox, and email where they have an address)
    and for each webhook that takes the event. Call inside the transaction that makes the change."""
    assert event in EVENTS, event
    link = request_link(settings, request.id, base_url)
    root = settings.public_url or base_url
    payload: dict[str, Any] = {
        "event": event,
        "request": {
            "id": request.id,
            "gate": request.gate,
            "state": request.state,
            "source_env": request.source_env,
            "target_env": request.target_env,
            "requested_by": request.requested_by,
            "author": request.author,
            "target_version": request.target_version,
        },
        "model": {
            "name": request.model_name,
            "version": request.source_version,
            "digest": request.evidence.get("digest"),
        },
        "links": {
            "request": link,
            "model": f"{root}/models/{request.source_env}/{request.model_name}/{request.source_version}",
        },
        "evidence": evidence_summary(session, request),
        "note": note,
        "text": _text(event, request, link, note),
    }
    return _fan_out(session, settings, event=event, payload=payload, recipients=recipients, request_id=request.id)


def emit_rollout(
    session: Session,
    settings: Settings,
    *,
    event: str,
    rollout: dict[str, Any],
    recipients: set[str],
    base_url: str,
    text: str,
) -> list[Notification]:
    """Queue a rollout event (`rollout.succeeded`, `rollout.failed`) for each recipient (inbox, and email
    where they have an address) and each webhook that takes it. Call inside the transaction that
    records the outcome."""
    assert event.startswith("rollout.") and event in EVENTS, event
    root = settings.public_url or base_url
    env, endpoint = rollout["environment"], rollout["endpoint"]
    link = f"{root}/endpoints/{env}/{endpoint}"
    payload: dict[str, Any] = {
        "event": event,
        "rollout": rollout,
        "links": {"endpoint": link, "model": f"{root}/models/{env}/{rollout['model']}/{rollout['version']}"},
        "text": f"{text}. {link}",
    }
    return _fan_out(
        session, settings, event=event, payload=payload, recipients=recipients, request_id=rollout.get("request_id")
    )


def emit_monitor(
    session: Session,
    settings: Settings,
    *,
    event: str,
    alert: dict[str, Any],
    recipients: set[str],
    base_url: str,
    text: str,
) -> list[Notification]:
    """Queue a monitor event (`monitor.alert`, `monitor.resolved`) for each recipient (inbox, and email
    where they have an address) and each webhook that takes it. Call inside the transaction that opens
    or resolves the alert."""
    assert event.startswith("monitor.") and event in EVENTS, event
    root = settings.public_url or base_url
    env, endpoint = alert["environment"], alert["endpoint"]
    link = f"{root}/endpoints/{env}/{endpoint}"
    links = {"endpoint": link}
    if alert.get("model"):
        name, _, version = str(alert["model"]).partition(":")
        links["model"] = f"{root}/models/{env}/{name}/{version}"
    payload: dict[str, Any] = {"event": event, "alert": alert, "links": links, "text": f"{text}. {link}"}
    return _fan_out(session, settings, event=event, payload=payload, recipients=recipients, request_id=None)


def emit_identity(
    session: Session, settings: Settings, *, event: str, change: dict[str, Any], recipients: set[str], text: str
) -> list[Notification]:
    """Queue an identity event (`identity.role-granted`, `identity.token-issued`: a role or a token given
    to someone by someone else) for the person concerned and the approvers of the gates it touches, so
    that nobody is given the power to decide a gate unseen. Call inside the transaction that makes it."""
    assert event.startswith("identity.") and event in EVENTS, event
    payload: dict[str, Any] = {"event": event, "change": change, "text": text}
    return _fan_out(session, settings, event=event, payload=payload, recipients=recipients, request_id=None)


def emit_audit_checkpoint(session: Session, settings: Settings, *, checkpoint: Any) -> list[Notification]:
    """Queue a signed checkpoint of the audit chain (`domain.audit_checkpoints.Checkpoint`) for each
    webhook that names `audit.checkpoint`: a copy of it outside this machine."""
    payload: dict[str, Any] = {
        "event": "audit.checkpoint",
        "checkpoint": dataclasses.asdict(checkpoint),
        "text": f"Audit log checkpoint: event {checkpoint.seq} has hash {checkpoint.hash}",
    }
    return _fan_out(session, settings, event="audit.checkpoint", payload=payload, recipients=set(), request_id=None)


def _takes(hook: WebhookConfig, event: str) -> bool:
    return event in hook.events if hook.events is not None else event not in NAMED_ONLY


def _fan_out(
    session: Session,
    settings: Settings,
    *,
    event: str,
    payload: dict[str, Any],
    recipients: set[str],
    request_id: int | None,
) -> list[Notification]:
    """One outbox row per channel: each recipient's inbox (delivered as it is written) and email where
    they have an address, and each webhook that takes the event."""
    now = utcnow()

    def row(channel: str, recipient: str) -> Notification:
        return Notification(
            delivery_id=str(uuid.uuid4()),
            event=event,
            channel=channel,
            recipient=recipient,
            request_id=request_id,
            payload=payload,
            state="sent" if channel == "inbox" else "pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            sent_at=now if channel == "inbox" else None,
        )

    rows: list[Notification] = []
    smtp = settings.raw.notifications.smtp
    for person in sorted(_people(session, recipients), key=lambda u: u.name):
        rows.append(row("inbox", person.name))
        if smtp is not None and person.email:
            rows.append(row("email", person.email))
    for hook in settings.raw.notifications.webhooks:
        if _takes(hook, event):
            rows.append(row("webhook", hook.name))
    session.add_all(rows)
    session.flush()
    return rows
