"""`mlgate score`: score an endpoint through the API, or the serving host directly with an endpoint key.

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
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from mlgate.errors import MlgateError
from mlgate.interfaces.cli.endpoint_commands import DECIMAL, EndpointOption, EnvOption
from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, emit_json, errors
from mlgate.interfaces.sdk.client import DEFAULT_TIMEOUT, Client

MLFLOW_PAYLOAD_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_INTEGER = re.compile(r"[+-]?\d+")


# --- payloads -----------------------------------------------------------------------------


def _cell(text: str) -> Any:
    value = text.strip()
    if not value:
        return None
    if _INTEGER.fullmatch(value):
        return int(value)
    if DECIMAL.fullmatch(value):
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


# --- the command ---------------------------------------------------------------------------------


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
