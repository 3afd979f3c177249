"""`mlgate audit at`: what served in an environment at a moment, and who approved it, from the audit log.

Registered on the `audit` group when this module is imported (`interfaces.cli.main` does).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlgate.domain.audit_history import parse_moment
from mlgate.errors import ValidationError
from mlgate.interfaces.cli.audit_commands import MALFORMED, audit
from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, errors, table
from mlgate.interfaces.sdk.client import ApiError, Client

REFUSED_INPUT = (404, 422)  # an unknown environment, a malformed time: the caller's input, exit 2


def _approved_by(slot: dict[str, Any]) -> str:
    return ", ".join(f"{a['approver']} (gate {a['gate']}, {a['at']})" for a in slot["approvals"])


@audit.command("at")
def serving_at(
    env: Annotated[str, typer.Option("--env", help="The environment, e.g. production.")],
    time: Annotated[
        str | None, typer.Option("--time", help="ISO 8601, e.g. 2025-03-01T14:30:00Z (no offset: UTC; default: now).")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Which versions served which endpoint slots of an environment at a time, with what weights, and who
    approved each, replayed from the audit log alone (exits 2 on a malformed time or an unknown env)."""
    try:
        moment = parse_moment(time) if time is not None else None
    except ValidationError as exc:
        errors.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(MALFORMED) from None
    try:
        with Client.discover(url, token) as client:
            answer = client.audit_at(env, moment)
    except ApiError as exc:
        if exc.status_code not in REFUSED_INPUT:
            raise
        errors.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(MALFORMED) from None
    if json_out:
        emit_json(answer)
        return
    rows = [
        [s["endpoint"], s["slot"], s["model"], s["version"], f"{s['weight']}%", _approved_by(s)]
        for s in answer["slots"]
    ]
    if not rows:
        console.print(f"nothing served in {answer['environment']} at {answer['at']} (by the audit log)")
        return
    table(
        f"{answer['environment']} at {answer['at']}",
        ["endpoint", "slot", "model", "version", "weight", "approved by"],
        rows,
    )
