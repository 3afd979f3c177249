"""`mlgate endpoints`, `mlgate deploy`, `mlgate score`: endpoints, their slots and traffic, and scoring them.

Scoring payloads are built here from JSON or CSV files with the standard library only: no pandas, so the
CLI stays quick to start.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape

from mlgate.errors import MlgateError
from mlgate.interfaces.cli.output import (
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    emit_json,
    errors,
    table,
)
from mlgate.interfaces.sdk.client import DEFAULT_TIMEOUT, Client

endpoints_app = typer.Typer(
    help="Endpoints: slots serving model versions, traffic weights, mirroring, keys.", no_args_is_help=True
)

EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.", show_default=False)]
EndpointOption = Annotated[str, typer.Option("--endpoint", help="The endpoint's name.", show_default=False)]

MLFLOW_PAYLOAD_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_INTEGER = re.compile(r"[+-]?\d+")
# Finite decimals only: float() would also take 'nan', 'inf' and '1_000', which are not numbers in a CSV.
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


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
    if not _DECIMAL.fullmatch(value):
        raise typer.BadParameter(f"the percentage in '{text}' must be a number from 0 to 50", param_hint="'--mirror'")
    return slot, float(value)


# --- scoring payloads -----------------------------------------------------------------------------


def _cell(text: str) -> Any:
    value = text.strip()
    if not value:
        return None
    if _INTEGER.fullmatch(value):
        return int(value)
    if _DECIMAL.fullmatch(value):
        return float(value)
    return text


def csv_payload(text: str, source: str) -> dict[str, Any]:
    """A CSV with a header row, as an MLflow `dataframe_split`: numbers become numbers, empty cells null."""
    records = list(csv.reader(io.StringIO(text)))
    while records and not any(cell.strip() for cell in records[-1]):
        records.pop()
    if not records:
        raise typer.BadParameter(f"{source} is empty: expected a header row of column names", param_hint="'--data'")
    columns = [c.strip() for c in records[0]]
    data = []
    for line, record in enumerate(records[1:], start=2):
        if len(record) != len(columns):
            raise typer.BadParameter(
                f"{source} line {line} has {len(record)} cells, the header has {len(columns)}", param_hint="'--data'"
            )
        data.append([_cell(cell) for cell in record])
    if not data:
        raise typer.BadParameter(f"{source} has a header but no rows", param_hint="'--data'")
    return {"dataframe_split": {"columns": columns, "data": data}}


def json_payload(raw: bytes, source: str) -> bytes:
    """An MLflow scoring body as given, or a bare list of records wrapped as `dataframe_records`."""
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{source} is not valid JSON: {exc}", param_hint="'--data'") from None
    if isinstance(parsed, list):
        return json.dumps({"dataframe_records": parsed}).encode()
    if not isinstance(parsed, dict):
        raise typer.BadParameter(
            f"{source} must hold a JSON object with one of {', '.join(MLFLOW_PAYLOAD_KEYS)}, or a list of records",
            param_hint="'--data'",
        )
    return raw  # as written: the host judges the payload and names what is wrong with it


def read_payload(data: str) -> bytes:
    """The request body for `--data`: a .json or .csv file, or `-` for JSON on standard input."""
    if data == "-":
        return json_payload(sys.stdin.buffer.read(), "standard input")
    path = Path(data)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise typer.BadParameter(
            f"expected a .json or .csv file (or - for JSON on standard input), got '{data}'", param_hint="'--data'"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {data}: {exc.strerror or exc}", param_hint="'--data'") from None
    if suffix == ".json":
        return json_payload(raw, data)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(f"{data} is not UTF-8 text: {exc}", param_hint="'--data'") from None
    return json.dumps(csv_payload(text, data)).encode()


def _scoring_url(host_url: str, endpoint: str) -> str:
    base = host_url.rstrip("/")
    return base if base.endswith("/invocations") else f"{base}/endpoints/{endpoint}/invocations"


def _post_to_host(url: str, body: bytes, *, key: str, slot: str | None) -> httpx.Response:
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    if slot:
        headers["mlgate-deployment"] = slot
    try:
        return httpx.post(url, content=body, headers=headers, timeout=DEFAULT_TIMEOUT)
    except httpx.HTTPError as exc:
        raise MlgateError(f"cannot reach the serving host at {url}: {exc}") from exc


def _error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from the host's error shape (`error_code`, `message`) or the API's (`error`)."""
    try:
        body = response.json()
    except ValueError:
        return "http_error", response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return str(body.get("error_code", "error")), body["message"]
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error.get("code", "error")), error["message"]
        if isinstance(error, str):
            return "error", error
    return "http_error", response.text[:500]


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


def score(
    env: EnvOption,
    endpoint: EndpointOption,
    data: Annotated[
        str, typer.Option("--data", help="A .json (MLflow payload or list of records) or .csv file; - reads JSON.")
    ],
    slot: Annotated[str | None, typer.Option("--slot", help="Score this slot, bypassing the weights.")] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="MLGATE_ENDPOINT_KEY",
            help="An endpoint key: score the serving host directly instead of through the API.",
            show_default=False,
        ),
    ] = None,
    host_url: Annotated[
        str | None,
        typer.Option("--host-url", help="With --key: the serving host's address, so no token is needed to look it up."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Score an endpoint: prints one prediction per line; non-200 answers print the host's message."""
    body = read_payload(data)
    if key is not None:
        if host_url is None:
            if not (token or os.environ.get("MLGATE_TOKEN")):
                raise typer.BadParameter(
                    "with --key and no mlgate token, give --host-url (the serving host's address)",
                    param_hint="'--host-url'",
                )
            with Client.discover(url, token) as client:
                target = client.endpoint(env, endpoint)["url"]
            if target is None:
                raise MlgateError(f"the serving host of '{env}' is not running")
        else:
            target = _scoring_url(host_url, endpoint)
        answer = _post_to_host(target, body, key=key, slot=slot)
    else:
        if host_url is not None:
            raise typer.BadParameter("--host-url goes with --key", param_hint="'--host-url'")
        with Client.discover(url, token) as client:
            answer = client.score(env, endpoint, body, slot=slot)
    if answer.status_code != 200:
        code, message = _error(answer)
        errors.print(f"error ({answer.status_code} {code}): {message}", markup=False)
        raise typer.Exit(1)
    result = answer.json()
    if json_out:
        emit_json(result)
        return
    predictions = result.get("predictions") if isinstance(result, dict) else None
    if not isinstance(predictions, list):
        emit_json(result)
        return
    for prediction in predictions:
        typer.echo(prediction if isinstance(prediction, str) else json.dumps(prediction))
