"""`mlgate rollouts`: the versions that passed a gate, rolled out to their endpoints step by step."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlgate.errors import MlgateError
from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, emit_json, table
from mlgate.interfaces.sdk.client import Client

rollouts_app = typer.Typer(help="Rollouts of promoted versions to their endpoints.", no_args_is_help=True)

FINAL_STATES = ("succeeded", "failed", "rolled-back")
EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.", show_default=False)]


def _slots(rollout: dict[str, Any]) -> str:
    return f"{rollout['from_slot'] or '-'} -> {rollout['to_slot'] or '-'}"


def _figures(step: dict[str, Any]) -> str:
    if step.get("requests") is None:
        return "-"
    p95 = step.get("p95_ms")
    shown = f"{step['requests']} req, {step['errors']} err ({step['error_rate']:.2%})"
    return shown + (f", p95 {p95:.1f} ms" if p95 is not None else "")


def _quality(step: dict[str, Any]) -> str:
    """The new slot's answers against the stable slot's: rows compared, disagreement, prediction drift."""
    if not step.get("compared"):
        return "-"
    drift = step.get("prediction_drift")
    shown = f"{step['compared']} rows, {step['disagreement_rate']:.1%} disagree"
    return shown + (f", drift {drift:.2f}" if drift is not None else "")


@rollouts_app.command("list")
def list_rollouts(
    env: EnvOption,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Only this endpoint's rollouts.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """The environment's rollouts, newest first: version, endpoint, strategy, slots, state."""
    with Client.discover(url, token) as client:
        rows = client.rollouts(env, endpoint=endpoint)
    if json_out:
        emit_json(rows)
        return
    table(
        f"rollouts in {env}",
        ["id", "model", "endpoint", "strategy", "slots", "state", "created", "finished"],
        [
            [
                r["id"],
                f"{r['model']}:{r['version']}",
                r["endpoint"],
                r["strategy"],
                _slots(r),
                r["state"],
                r["created_at"],
                r["finished_at"] or "-",
            ]
            for r in rows
        ],
    )


@rollouts_app.command("show")
def show_rollout(
    rollout_id: int, env: EnvOption, url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False
) -> None:
    """One rollout: each step's traffic, timings, observed figures (SLOs; quality: rows compared with the
    stable slot, disagreement rate, prediction drift) and the outcome."""
    with Client.discover(url, token) as client:
        rollout = client.rollout(env, rollout_id)
    if json_out:
        emit_json(rollout)
        return
    previous = f"version {rollout['previous_version']}" if rollout["previous_version"] is not None else "none"
    table(
        f"rollout {rollout['id']} in {env}",
        ["", ""],
        [
            ["version", f"{rollout['model']}:{rollout['version']} (request {rollout['request_id'] or '-'})"],
            ["endpoint", rollout["endpoint"]],
            ["strategy", rollout["strategy"]],
            ["slots", f"{_slots(rollout)} (previous: {previous})"],
            ["state", rollout["state"]],
            ["reason", escape(rollout["reason"] or "-")],
            ["created", rollout["created_at"]],
            ["finished", rollout["finished_at"] or "-"],
        ],
    )
    table(
        "steps",
        ["#", "traffic", "started", "ended", "observed", "quality", "outcome"],
        [
            [
                i + 1,
                f"{s['traffic']}%",
                s.get("started_at") or "-",
                s.get("ended_at") or "-",
                _figures(s),
                _quality(s),
                s.get("outcome") or "running",
            ]
            for i, s in enumerate(rollout["steps"])
        ],
    )


@rollouts_app.command("wait")
def wait_rollout(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION in the environment, like diabetes:2.")],
    env: EnvOption,
    timeout_minutes: Annotated[float, typer.Option("--timeout-minutes", help="How long to wait.")] = 30,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Wait until the version's rollout ends (for CI); exit 1 unless it succeeded."""
    name, _, number = ref.partition(":")
    if not name or not number.isdigit():
        raise typer.BadParameter(f"expected NAME:VERSION, like diabetes:2; got '{ref}'", param_hint="REF")
    version = int(number)
    deadline = time.monotonic() + timeout_minutes * 60
    with Client.discover(url, token) as client:
        while True:
            found = next((r for r in client.rollouts(env) if r["model"] == name and r["version"] == version), None)
            if found is not None and found["state"] in FINAL_STATES:
                break
            if time.monotonic() > deadline:
                state = found["state"] if found else "not started"
                raise MlgateError(f"the rollout of {ref} in {env} is still {state} after {timeout_minutes:g} minutes")
            time.sleep(1.0)
    if json_out:
        emit_json(found)
    else:
        typer.echo(f"rollout {found['id']} of {ref} to {found['endpoint']} in {env}: {found['state']}")
        if found["reason"]:
            typer.echo(f"reason: {found['reason']}")
    if found["state"] != "succeeded":
        raise typer.Exit(1)
