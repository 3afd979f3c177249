"""`mlgate data`: register data assets (CSV or Parquet) as versions in an environment's data store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, table
from mlgate.interfaces.sdk.client import Client

data_app = typer.Typer(help="Data assets: versioned, content-addressed training data.", no_args_is_help=True)

EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.")]
MAX_DATA_BYTES = 1024 * 1024 * 1024


@data_app.command("register")
def register(
    name: str,
    path: Path,
    env: EnvOption = "dev",
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Upload a CSV or Parquet file (or a folder of them) as the next version of NAME."""
    from mlgate.snapshot import pack_data

    archive = pack_data(path, limit=MAX_DATA_BYTES)
    with Client.discover(url, token) as client:
        asset = client.register_data(env, name, archive, source=str(path.resolve()))
    if json_out:
        emit_json(asset)
        return
    columns = ", ".join(c["name"] for c in asset["columns"])
    console.print(
        f"{asset['name']}@{asset['version']} in {env}: {asset['rows']} rows, sha256 {asset['sha256'][:12]}"
        f" ({asset['format']}; columns {columns})"
    )


@data_app.command("list")
def list_assets(
    env: EnvOption = "dev",
    name: Annotated[str | None, typer.Option(help="Only this asset's versions.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Data assets and their versions."""
    with Client.discover(url, token) as client:
        rows = client.data_assets(env, name=name)
    if json_out:
        emit_json(rows)
        return
    table(
        f"data assets in {env}",
        ["name", "version", "rows", "format", "sha256", "by", "created"],
        [
            [a["name"], a["version"], a["rows"], a["format"], a["sha256"][:12], a["created_by"], a["created_at"]]
            for a in rows
        ],
    )


@data_app.command("show")
def show_asset(
    ref: Annotated[str, typer.Argument(help="NAME (the latest version) or NAME@VERSION.")],
    env: EnvOption = "dev",
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """One version: digest, rows, schema, files."""
    with Client.discover(url, token) as client:
        asset = client.data_asset(env, ref)
    if json_out:
        emit_json(asset)
        return
    console.print(f"{asset['name']}@{asset['version']} in {env}: {asset['rows']} rows, sha256 {asset['sha256']}")
    table("columns", ["name", "type"], [[c["name"], c["type"]] for c in asset["columns"]])
    table("files", ["path", "sha256", "bytes"], [[f["path"], f["sha256"][:12], f["size"]] for f in asset["files"]])
