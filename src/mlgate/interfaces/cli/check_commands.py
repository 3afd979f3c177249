"""`mlgate check`: run a version's checks in staging now, wait for them, show the evidence."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, emit_json, table
from mlgate.interfaces.sdk.client import Client

POLL_S = 1.0


def _duration(record: dict[str, Any]) -> str:
    if not record.get("finished_at"):
        return ""
    seconds = (
        datetime.fromisoformat(record["finished_at"]) - datetime.fromisoformat(record["started_at"])
    ).total_seconds()
    return f"{seconds:.1f}s"


def check(
    model: Annotated[str, typer.Argument(help="NAME:VERSION in the environment.")],
    env: Annotated[str, typer.Option("--env", "-e", help="The environment (checks run in staging).")] = "staging",
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this check (repeatable).")] = None,
    timeout_minutes: Annotated[float, typer.Option("--timeout-minutes", help="How long to wait.")] = 60,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run the configured checks (or --only some) on a version now; wait; exit 1 if any did not pass."""
    from mlgate.errors import MlgateError
    from mlgate.interfaces.cli.request_commands import _name_version

    name, version = _name_version(model)
    with Client.discover(url, token) as client:
        started = client.run_checks(env, name, version, only=only or None)
        ids = {record["id"] for record in started}
        deadline = time.monotonic() + timeout_minutes * 60
        while True:
            records = [r for r in client.checks(env, name, version) if r["id"] in ids]
            if all(r["status"] != "running" for r in records):
                break
            if time.monotonic() > deadline:
                raise MlgateError(f"checks still running after {timeout_minutes:g} minutes")
            time.sleep(POLL_S)
    if json_out:
        emit_json(records)
    else:
        rows = [[r["name"], r["status"], _duration(r), r["job_id"], r["summary"]] for r in records]
        table(f"checks of {name}:{version} in {env}", ["check", "status", "duration", "job", "summary"], rows)
    if any(r["status"] != "passed" for r in records):
        raise typer.Exit(1)
