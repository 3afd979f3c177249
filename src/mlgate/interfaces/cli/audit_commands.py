"""`mlgate audit`: list events, verify the hash chain."""

from __future__ import annotations

from typing import Annotated

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, errors, table
from mlgate.interfaces.sdk.client import Client

audit = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@audit.command("list")
def list_events(
    actor: Annotated[str | None, typer.Option(help="Only this actor's events.")] = None,
    action: Annotated[str | None, typer.Option(help="Only actions starting with this.")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """The newest audit events."""
    with Client.discover(url, token) as client:
        rows = client.audit(actor=actor, action=action, environment=env, limit=limit)
    if json_out:
        emit_json(rows)
        return
    table(
        "audit log",
        ["seq", "at", "actor", "action", "env", "subject"],
        [[e["seq"], e["at"], e["actor"], e["action"], e["environment"] or "", e["subject"] or ""] for e in rows],
    )


@audit.command("verify")
def verify(url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False) -> None:
    """Check the hash chain; exits non-zero naming the first broken event."""
    with Client.discover(url, token) as client:
        result = client.verify_audit()
    if json_out:
        emit_json(result)
    elif result["ok"]:
        console.print(f"OK: {result['events']} events, chain intact")
    else:
        errors.print(f"BROKEN at event {result['broken_seq']}: {result['reason']}")
    if not result["ok"]:
        raise typer.Exit(1)
