"""`mlgate env`: each environment's MLflow address, artifact root and serving address."""

from __future__ import annotations

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, table
from mlgate.interfaces.sdk.client import Client

envs = typer.Typer(help="Environments and how to reach them.", no_args_is_help=True)


@envs.command("list")
def list_envs(url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False) -> None:
    """Every environment in promotion order."""
    with Client.discover(url, token) as client:
        rows = client.environments()
    if json_out:
        emit_json(rows)
        return
    table(
        "environments",
        ["name", "kind", "tracking URI", "artifact root", "serving", "your roles"],
        [
            [
                e["name"],
                e["kind"],
                e["tracking_uri"],
                e["artifact_root"],
                e["serving_address"],
                ", ".join(e["my_roles"]) or "-",
            ]
            for e in rows
        ],
    )


@envs.command("show")
def show_env(name: str, url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False) -> None:
    """One environment, and how to point plain MLflow code at it."""
    with Client.discover(url, token) as client:
        env = client.environment(name)
    if json_out:
        emit_json(env)
        return
    table(
        f"environment {name}",
        ["", ""],
        [
            ["kind", env["kind"]],
            ["tracking URI", env["tracking_uri"]],
            ["artifact root", env["artifact_root"]],
            ["serving", env["serving_address"]],
            ["your roles", ", ".join(env["my_roles"]) or "-"],
        ],
    )
    console.print("plain MLflow code reaches it with:")
    typer.echo(f"  export MLFLOW_TRACKING_URI={env['tracking_uri']}")
    typer.echo("  export MLFLOW_TRACKING_TOKEN=<your mlgate token>")
