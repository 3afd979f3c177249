"""`mlgate notifications`: the delivery log (admins) and your in-app notifications."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, table
from mlgate.interfaces.sdk.client import Client

notifications_app = typer.Typer(
    help="Notifications: the delivery log of email and webhooks, and your in-app inbox.", no_args_is_help=True
)


def _when(row: dict[str, Any]) -> str:
    if row["state"] == "sent":
        return f"sent {row['sent_at']}"
    if row["state"] == "pending":
        return f"next {row['next_attempt_at']}"
    return ""


@notifications_app.command("list")
def list_deliveries(
    state: Annotated[str | None, typer.Option(help="Only this state: pending, sent or failed.")] = None,
    event: Annotated[str | None, typer.Option(help="Only this event, e.g. request.opened.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel: inbox, email or webhook.")] = None,
    request_id: Annotated[int | None, typer.Option("--request", help="Only this promotion request's.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """The delivery log (admins): each message, its state, attempts and last error."""
    with Client.discover(url, token) as client:
        rows = client.notifications(state=state, event=event, channel=channel, request_id=request_id, limit=limit)
    if json_out:
        emit_json(rows)
        return
    table(
        "notifications",
        ["id", "event", "channel", "recipient", "request", "state", "attempts", "when", "last error", "delivery id"],
        [
            [
                r["id"],
                r["event"],
                r["channel"],
                r["recipient"],
                r["request_id"],
                r["state"],
                r["attempts"],
                _when(r),
                r["last_error"],
                r["delivery_id"],
            ]
            for r in rows
        ],
    )


@notifications_app.command("inbox")
def inbox(
    unread: Annotated[bool, typer.Option("--unread", help="Only the ones not yet read.")] = False,
    limit: Annotated[int, typer.Option(help="How many, unread first.")] = 50,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Your in-app notifications, unread first. (`mlgate inbox` lists the requests waiting for you.)"""
    with Client.discover(url, token) as client:
        result = client.notifications_inbox(unread=unread, limit=limit)
    if json_out:
        emit_json(result)
        return
    table(
        f"notifications ({result['unread']} unread)",
        ["id", "", "event", "at", "text"],
        [[n["id"], "" if n["read_at"] else "*", n["event"], n["created_at"], n["text"]] for n in result["data"]],
    )


@notifications_app.command("read")
def mark_read(
    notification_id: Annotated[int, typer.Argument(help="The notification's id (from `mlgate notifications inbox`).")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Mark one of your notifications read."""
    with Client.discover(url, token) as client:
        item = client.mark_notification_read(notification_id)
    if json_out:
        emit_json(item)
    else:
        console.print(f"notification {item['id']} read")
