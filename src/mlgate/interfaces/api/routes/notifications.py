"""Notifications: the delivery log (admins) and the caller's own in-app inbox."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Query

from mlgate.interfaces.api.deps import Administrator, Authenticated, ContextDep
from mlgate.interfaces.api.params import OptionalRowIdQuery, RowId
from mlgate.interfaces.api.schemas.notifications import DeliveriesPublic, DeliveryPublic, InboxItemPublic, InboxPublic
from mlgate.services.notifications import inbox

router = APIRouter(prefix="/api/v1", tags=["notifications"])


def _inbox_item(item: inbox.InboxItem) -> InboxItemPublic:
    return InboxItemPublic(**dataclasses.asdict(item))


@router.get("/notifications", response_model=DeliveriesPublic)
def list_notifications(
    _: Administrator,
    ctx: ContextDep,
    state: str | None = None,
    event: str | None = None,
    channel: str | None = None,
    request_id: OptionalRowIdQuery = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> DeliveriesPublic:
    """The delivery log, newest first: every message, its attempts, its last error."""
    rows = inbox.list_deliveries(ctx.db, state=state, event=event, channel=channel, request_id=request_id, limit=limit)
    data = [DeliveryPublic(**dataclasses.asdict(row)) for row in rows]
    return DeliveriesPublic(data=data, count=len(data))


@router.get("/inbox", response_model=InboxPublic)
def my_inbox(
    principal: Authenticated,
    ctx: ContextDep,
    unread: bool = False,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> InboxPublic:
    """The caller's in-app notifications: unread first, then newest first."""
    items, unread_count = inbox.inbox(ctx.db, user=principal.name, unread_only=unread, limit=limit)
    data = [_inbox_item(item) for item in items]
    return InboxPublic(data=data, count=len(data), unread=unread_count)


@router.post("/inbox/{notification_id}/read", response_model=InboxItemPublic)
def mark_read(notification_id: RowId, principal: Authenticated, ctx: ContextDep) -> InboxItemPublic:
    return _inbox_item(inbox.mark_read(ctx.db, user=principal.name, notification_id=notification_id))
