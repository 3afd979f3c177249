"""Notifications: the delivery log, and a person's inbox."""

from __future__ import annotations

from pydantic import BaseModel

from mlgate.interfaces.api.schemas.base import UtcDatetime


class DeliveryPublic(BaseModel):
    """One row of the notification delivery log."""

    id: int
    delivery_id: str
    event: str
    channel: str
    recipient: str
    request_id: int | None
    state: str
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_error: str | None
    created_at: UtcDatetime
    sent_at: UtcDatetime | None
    text: str


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]
    count: int


class InboxItemPublic(BaseModel):
    id: int
    event: str
    request_id: int | None
    text: str
    links: dict[str, str]
    created_at: UtcDatetime
    read_at: UtcDatetime | None


class InboxPublic(BaseModel):
    data: list[InboxItemPublic]
    count: int
    unread: int
