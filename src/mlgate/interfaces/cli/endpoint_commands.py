"""`mlgate endpoints`, `mlgate deploy`: endpoints, their slots and traffic (`mlgate score` scores them)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlgate.interfaces.cli.output import (
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    emit_json,
    table,
)
from mlgate.interfaces.sdk.client import Client

endpoints_app = typer.Typer(
    help="Endpoints: slots serving model versions, traffic weights, mirroring, keys.", no_args_is_help=True
)

EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.", show_default=False)]
EndpointOption = Annotated[str, typer.Option("--endpoint", help="The endpoint's name.", show_default=False)]

# Finite decimals only: float() would also take 'nan', 'inf' and '1_000', which are not numbers to a person.
DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class KeyName(StrEnum):
    primary = "primary"
    secondary = "secondary"


# --- how an endpoint reads ------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{value:g}%"


def slots_text(endpoint: dict[str, Any]) -> str:
    """`blue=v1:90% green=v2:10%`: each slot's version and share of the traffic."""
    return " ".join(f"{s['slot']}=v{s['version']}:{s['traffic']}%" for s in endpoint["slots"]) or "-"


def mirror_text(endpoint: dict[str, Any]) -> str:
    mirror = endpoint["mirror"]
    return f"{mirror['slot']} {_percent(mirror['percent'])}" if mirror else "-"


def _ready_text(endpoint: dict[str, Any]) -> str:
    if not endpoint["slots"]:
        return "no deployment"
    return "yes" if endpoint["ready"] else "no"


def _allocation(endpoint: dict[str, Any]) -> None:
    """The slots as a table: what each serves, its weight, its mirrored share, whether the host serves it."""
    if not endpoint["slots"]:
        where = f"--env {endpoint['environment']} --endpoint {endpoint['name']}"
        typer.echo(f"{endpoint['name']} has no deployment yet: `mlgate deploy NAME:VERSION {where} --slot blue`")
        return
    table(
        f"{endpoint['name']} in {endpoint['environment']}",
        ["slot", "model", "traffic", "mirror", "ready", "digest"],
        [
            [
                s["slot"],
                f"{s['model']}:{s['version']}",
                f"{s['traffic']}%",
                _percent(s["mirror_percent"]) if s["mirror_percent"] else "-",
                "yes" if s["ready"] else "no",
                s["digest"][:12],
            ]
            for s in endpoint["slots"]
        ],
    )


def _summary(endpoint: dict[str, Any]) -> str:
    return (
        f"{endpoint['name']} in {endpoint['environment']} (revision {endpoint['revision']}): "
        f"{slots_text(endpoint)}; mirror {mirror_text(endpoint)}"
    )


# --- argument parsing -----------------------------------------------------------------------------


def _model_ref(text: str) -> tuple[str, int]:
    name, _, version = text.rpartition(":")
    if not name or not version.isdigit() or int(version) < 1:
        raise typer.BadParameter(f"expected NAME:VERSION, like diabetes:1, got '{text}'", param_hint="'MODEL'")
    return name, int(version)


def _assignment(text: str, *, what: str, hint: str) -> tuple[str, str]:
    slot, sep, value = text.partition("=")
    if not sep or not slot or not value:
        raise typer.BadParameter(f"expected {what}, got '{text}'", param_hint=hint)
    return slot, value


def parse_weights(args: list[str]) -> dict[str, int]:
    """`blue=10 green=90` -> {"blue": 10, "green": 90}; whether they sum to 100 is the server's rule."""
    weights: dict[str, int] = {}
    for arg in args:
        slot, value = _assignment(arg, what="SLOT=PERCENT, like blue=90", hint="'WEIGHTS'")
        if not value.isdigit():
            raise typer.BadParameter(
                f"the weight in '{arg}' must be a whole number from 0 to 100", param_hint="'WEIGHTS'"
            )
        if slot in weights:
            raise typer.BadParameter(f"slot '{slot}' is given twice", param_hint="'WEIGHTS'")
        weights[slot] = int(value)
    return weights


def parse_mirror(text: str) -> tuple[str, float]:
    slot, value = _assignment(text, what="SLOT=PERCENT, like green=5", hint="'--mirror'")
    if not DECIMAL.fullmatch(value):
        raise typer.BadParameter(f"the percentage in '{text}' must be a number from 0 to 50", param_hint="'--mirror'")
    return slot, float(value)


# --- commands -------------------------------------------------------------------------------------


@endpoints_app.command("create")
def create_endpoint(
    name: Annotated[str, typer.Argument(help="The endpoint's name (it is part of the scoring URL).")],
    env: EnvOption,
    description: Annotated[str, typer.Option(help="What the endpoint is for.")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an endpoint; prints its scoring URLs and its two keys, once."""
    with Client.discover(url, token) as client:
        created = client.create_endpoint(env, name, description=description)
    if json_out:
        emit_json(created)
        return
    console.print(f"created endpoint {created['name']} in {created['environment']}", markup=False)
    typer.echo(f"scoring (MLflow): {created['url'] or '- (the serving host is not running)'}")
    typer.echo(f"scoring (v2):     {created['v2_url'] or '-'}")
    typer.echo("keys (shown once, store them now; send one as 'Authorization: Bearer KEY'):")
    for which in ("primary", "secondary"):
        typer.echo(f"  {which:<9}  {created['keys'][which]}")
    typer.echo(f"next: `mlgate deploy NAME:VERSION --env {env} --endpoint {name} --slot blue`")


@endpoints_app.command("list")
def list_endpoints(
    env: EnvOption, url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False
) -> None:
    """The environment's endpoints: slots with version and weight, mirror, readiness, scoring URL."""
    with Client.discover(url, token) as client:
        rows = client.endpoints(env)
    if json_out:
        emit_json(rows)
        return
    table(
        f"endpoints in {env}",
        ["name", "slots", "mirror", "ready", "url"],
        [[e["name"], slots_text(e), mirror_text(e), _ready_text(e), e["url"] or "-"] for e in rows],
    )


@endpoints_app.command("show")
def show_endpoint(
    name: str, env: EnvOption, url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False
) -> None:
    """One endpoint: its slots, weights and mirror, readiness, URLs, key prefixes, last change, host."""
    with Client.discover(url, token) as client:
        endpoint = client.endpoint(env, name)
    if json_out:
        emit_json(endpoint)
        return
    host = endpoint["host"]
    prefixes = endpoint["key_prefixes"]
    changed = (
        f"revision {endpoint['revision']} by {endpoint['updated_by']} at {endpoint['updated_at']}"
        if endpoint["revision"] is not None
        else "never deployed"
    )
    process = (
        f"pid {host['pid']}, {host['restarts']} restart(s), started {host['started_at']}"
        if host["running"]
        else f"not running ({host['restarts']} restart(s))"
    )
    table(
        f"endpoint {name} in {env}",
        ["", ""],
        [
            ["description", escape(endpoint["description"]) or "-"],
            ["created", f"{endpoint['created_by']} at {endpoint['created_at']} ({endpoint['origin']})"],
            ["slots", slots_text(endpoint)],
            ["mirror", mirror_text(endpoint)],
            ["ready", _ready_text(endpoint)],
            ["scoring (MLflow)", endpoint["url"] or "-"],
            ["scoring (v2)", endpoint["v2_url"] or "-"],
            ["keys", ", ".join(f"{which} {prefixes[which]}…" for which in sorted(prefixes))],
            ["last change", changed],
            ["roll back", "possible" if endpoint["can_roll_back"] else "nothing to roll back to"],
            ["host", f"{host['url'] or '-'}: {process}"],
        ],
    )
    _allocation(endpoint)


@endpoints_app.command("traffic")
def set_traffic(
    name: str,
    env: EnvOption,
    weights: Annotated[
        list[str] | None,
        typer.Argument(help="SLOT=PERCENT for each slot, summing to 100 (slots not named get 0); default: as now."),
    ] = None,
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="SLOT=PERCENT: copy that share of live traffic to a slot.")
    ] = None,
    no_mirror: Annotated[bool, typer.Option("--no-mirror", help="Stop mirroring.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Set the traffic weights of an endpoint's slots, and its mirror."""
    if mirror is not None and no_mirror:
        raise typer.BadParameter("give --mirror SLOT=PERCENT or --no-mirror, not both", param_hint="'--mirror'")
    parsed = parse_weights(weights or [])
    shadow = parse_mirror(mirror) if mirror is not None else None
    if not parsed and shadow is None and not no_mirror:
        raise typer.BadParameter("give the weights, like blue=90 green=10, or a mirror change", param_hint="'WEIGHTS'")
    with Client.discover(url, token) as client:
        if not parsed:  # a mirror change alone keeps the weights
            parsed = {s["slot"]: s["traffic"] for s in client.endpoint(env, name)["slots"]}
        endpoint = client.set_traffic(env, name, parsed, mirror=shadow, clear_mirror=no_mirror)
    if json_out:
        emit_json(endpoint)
        return
    console.print(_summary(endpoint), markup=False)
    _allocation(endpoint)


@endpoints_app.command("rollback")
def rollback(
    name: str, env: EnvOption, url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False
) -> None:
    """Restore the allocation the live one replaced (versions, weights and mirror)."""
    with Client.discover(url, token) as client:
        endpoint = client.rollback_endpoint(env, name)
    if json_out:
        emit_json(endpoint)
        return
    console.print(f"rolled back: {_summary(endpoint)}", markup=False)
    _allocation(endpoint)


@endpoints_app.command("rotate-key")
def rotate_key(
    name: str,
    env: EnvOption,
    which: Annotated[KeyName, typer.Option("--which", help="The key to replace.", show_default=False)],
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Replace one of an endpoint's two keys: the old one stops working at once, the other keeps working."""
    with Client.discover(url, token) as client:
        rotated = client.rotate_key(env, name, which.value)
    if json_out:
        emit_json(rotated)
        return
    console.print(f"new {which.value} key for {name} in {env} (shown once, store it now):", markup=False)
    typer.echo(f"  {rotated['key']}")


def deploy(
    model: Annotated[str, typer.Argument(help="NAME:VERSION in the environment's registry, like diabetes:2.")],
    env: EnvOption,
    endpoint: EndpointOption,
    slot: Annotated[str, typer.Option("--slot", help="The slot to serve it in, like blue or green.")],
    traffic: Annotated[
        int | None,
        typer.Option(
            "--traffic", help="Its share of the traffic, 0-100; the other slots share the rest (default: as now)."
        ),
    ] = None,
    mirror: Annotated[
        float | None, typer.Option("--mirror", help="Copy this percentage (0-50) of live traffic to it; 0 stops.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Deploy a model version into an endpoint's slot; returns once the serving host serves it."""
    name, version = _model_ref(model)
    with Client.discover(url, token) as client:
        deployed = client.deploy(env, endpoint, model=name, version=version, slot=slot, traffic=traffic, mirror=mirror)
    if json_out:
        emit_json(deployed)
        return
    placed = next((s for s in deployed["slots"] if s["slot"] == slot), None)
    state = "is ready" if placed is not None and placed["ready"] else "is not ready yet"
    console.print(f"{name}:{version} {state} in slot {slot} of {endpoint} ({env})", markup=False)
    console.print(_summary(deployed), markup=False)
    _allocation(deployed)
