"""Reading the outbox: the delivery log (admins) and each person's in-app inbox, which they mark read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlgate.adapters.notify.base import EMAIL, INBOX, WEBHOOK
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Notification, utcnow
from mlgate.errors import NotFoundError, ValidationError
from mlgate.services.notifications.delivery import FAILED, PENDING, SENT
from mlgate.services.notifications.outbox import EVENTS

STATES = (PENDING, SENT, FAILED)
CHANNELS = (INBOX, EMAIL, WEBHOOK)


@dataclass(frozen=True)
class DeliveryView:
    id: int
    delivery_id: str
    event: str
    channel: str
    recipient: str
    request_id: int | None
    state: str
    attempts: int
    next_attempt_at: datetime | None  # while pending: when the next attempt is due
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    text: str


@dataclass(frozen=True)
class InboxItem:
    id: int
    event: str
    request_id: int | None
    text: str
    links: dict[str, str]
    created_at: datetime
    read_at: datetime | None


def _text(payload: dict[str, Any]) -> str:
    return str(payload.get("text") or "")


def _delivery_view(row: Notification) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        delivery_id=row.delivery_id,
        event=row.event,
        channel=row.channel,
        recipient=row.recipient,
        request_id=row.request_id,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.state == PENDING else None,
        last_error=row.last_error,
        created_at=row.created_at,
        sent_at=row.sent_at,
        text=_text(row.payload),
    )


def _inbox_item(row: Notification) -> InboxItem:
    links = row.payload.get("links")
    return InboxItem(
        id=row.id,
        event=row.event,
        request_id=row.request_id,
        text=_text(row.payload),
        links={str(k): str(v) for k, v in links.items()} if isinstance(links, dict) else {},
        created_at=row.created_at,
        read_at=row.read_at,
    )


def _one_of(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValidationError(f"unknown {name} '{value}'; expected one of: {', '.join(allowed)}", details={name: value})


def list_deliveries(
    db: Database,
    *,
    state: str | None = None,
    event: str | None = None,
    channel: str | None = None,
    request_id: int | None = None,
    limit: int = 100,
) -> list[DeliveryView]:
    """The delivery log, newest first."""
    _one_of("state", state, STATES)
    _one_of("event", event, EVENTS)
    _one_of("channel", channel, CHANNELS)
    query = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Notification.state == state)
    if event is not None:
        query = query.where(Notification.event == event)
    if channel is not None:
        query = query.where(Notification.channel == channel)
    if request_id is not None:
        query = query.where(Notification.request_id == request_id)
    with db.read() as session:
        return [_delivery_view(row) for row in session.execute(query).scalars()]


def _mine(user: str) -> Any:
    return (Notification.channel == INBOX) & (Notification.recipient == user)


def inbox(db: Database, *, user: str, unread_only: bool = False, limit: int = 100) -> tuple[list[InboxItem], int]:
    """A person's in-app notifications, unread first, newest first within each; and how many are unread."""
    query = (
        select(Notification)
        .where(_mine(user))
        .order_by(Notification.read_at.is_not(None), Notification.id.desc())
        .limit(limit)
    )
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    with db.read() as session:
        items = [_inbox_item(row) for row in session.execute(query).scalars()]
        unread = session.execute(
            select(func.count()).select_from(Notification).where(_mine(user), Notification.read_at.is_(None))
        ).scalar_one()
    return items, int(unread)


def _own_item(session: Session, *, user: str, notification_id: int) -> Notification:
    row = session.execute(
        select(Notification).where(_mine(user), Notification.id == notification_id)
    ).scalar_one_or_none()
    if row is None:  # someone else's looks the same as none: ids say nothing about other people's inboxes
        raise NotFoundError(
            f"no notification {notification_id} in {user}'s inbox", details={"notification": notification_id}
        )
    return row


def mark_read(db: Database, *, user: str, notification_id: int) -> InboxItem:
    """Mark one of the person's notifications read; marking it again keeps the first time."""
    with db.write() as session:
        row = _own_item(session, user=user, notification_id=notification_id)
        if row.read_at is None:
            row.read_at = utcnow()
        return _inbox_item(row)
