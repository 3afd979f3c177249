"""`mlgate register` and `mlgate models`: register a run's logged model in dev, list, show and delete versions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, table
from mlgate.interfaces.sdk.client import Client

models_app = typer.Typer(help="Model versions: digest, lineage, baseline profile, model card.", no_args_is_help=True)

EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.")]


def _profile_text(version: dict[str, Any]) -> str:
    profile = version["profile"]
    if profile is None:
        return "none"
    label = f", label {profile['label']['name']}" if profile.get("label") else ""
    predictions = ", predictions" if profile.get("predictions") else ""
    return f"{profile['data']}: {profile['rows']} rows, {len(profile['features'])} features{label}{predictions}"


def register(
    name: Annotated[str, typer.Option("--name", help="The registered model's name.")],
    run: Annotated[str | None, typer.Option("--run", help="The MLflow run that logged the model.")] = None,
    model: Annotated[str, typer.Option("--model", help="The logged model's name in the run.")] = "model",
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="A logged model's models:/m-... URI, instead of --model.")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Training data NAME@VERSION (default: what the run's job used).")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="The training data's label column.")] = None,
    env: EnvOption = "dev",
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Register a run's logged model: digest, signature, lineage, baseline profile and model card."""
    if run is None and model_uri is None:
        raise typer.BadParameter("give --run RUN_ID (with --model NAME) or --model-uri models:/m-...")
    with Client.discover(url, token) as client:
        version = client.register_model(
            env, name=name, run_id=run, model=model, model_uri=model_uri, data=data, label=label
        )
    if json_out:
        emit_json(version)
        return
    what = "registered" if version["created"] else "already registered as"
    console.print(f"{what} {version['name']} version {version['version']} in {env}", markup=False)
    typer.echo(f"digest: sha256:{version['digest']}")
    typer.echo(f"profile: {_profile_text(version)}")
    for note in version["notes"]:
        typer.echo(f"note: {note}")
    if version.get("request_id"):
        typer.echo(f"promotion request {version['request_id']} opened: `mlgate requests show {version['request_id']}`")


@models_app.command("list")
def list_versions(
    env: EnvOption = "dev",
    name: Annotated[str | None, typer.Option(help="Only this model's versions.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Registered model versions in the environment."""
    with Client.discover(url, token) as client:
        rows = client.models(env, name=name)
    if json_out:
        emit_json(rows)
        return
    table(
        f"models in {env}",
        ["name", "version", "digest", "run", "profile", "by", "created"],
        [
            [
                v["name"],
                v["version"],
                v["digest"][:12],
                v["run_id"] or "-",
                "yes" if v["has_profile"] else "no",
                v["created_by"],
                v["created_at"],
            ]
            for v in rows
        ],
    )


def _chain_text(version: dict[str, Any]) -> str:
    """dev -> staging -> production: the versions this one was copied from and to, by promotion."""
    links = version.get("chain") or []
    if len(links) <= 1:
        return "not promoted"
    parts = []
    for link in links:
        text = f"{link['environment']} {link['name']}:{link['version']}"
        if link.get("request_id"):
            text += f" (request {link['request_id']})"
        parts.append(text)
    return " -> ".join(parts)


def _parse_ref(ref: str) -> tuple[str, int]:
    name, _, version = ref.rpartition(":")
    if not name or not version.isdigit() or int(version) < 1:
        raise typer.BadParameter(f"expected NAME:VERSION, like diabetes:1, got '{ref}'")
    return name, int(version)


@models_app.command("show")
def show_version(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, like diabetes:1.")],
    env: EnvOption = "dev",
    card: Annotated[bool, typer.Option("--card", help="Print the model card (Markdown).")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """One version: digest, lineage, signature, profile; its model card with --card."""
    name, number = _parse_ref(ref)
    with Client.discover(url, token) as client:
        version = client.model_version(env, name, number)
    if json_out:
        emit_json(version)
        return
    if card:
        typer.echo(version["card"])
        return
    lineage = version["lineage"]
    inputs = version["signature"].get("inputs") or []
    code = (
        f"snapshot {lineage['snapshot_sha256'][:12]}, git {lineage.get('git_commit') or '-'}"
        if lineage.get("snapshot_sha256")
        else lineage.get("code_note") or "-"
    )
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(lineage.get("metrics", {}).items()))
    table(
        f"{name} version {number} in {env}",
        ["", ""],
        [
            ["digest", f"sha256:{version['digest']}"],
            ["model", version["model_uri"]],
            ["run", version["run_id"] or "-"],
            ["code", code],
            ["data", ", ".join(lineage.get("data") or []) or "-"],
            ["metrics", metrics or "-"],
            ["inputs", ", ".join(str(s.get("name", s.get("type"))) for s in inputs)],
            ["profile", _profile_text(version)],
            ["registered", f"{version['created_by']} at {version['created_at']}"],
            ["chain", _chain_text(version)],
        ],
    )
    for note in version["notes"]:
        typer.echo(f"note: {note}")


@models_app.command("delete")
def delete_version(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, like diabetes:1.")],
    env: EnvOption = "dev",
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a dev version no request carries and that was never promoted: its MLflow version goes,
    mlgate's record stays, marked deleted (the number is never given again)."""
    name, number = _parse_ref(ref)
    with Client.discover(url, token) as client:
        deleted = client.delete_model_version(env, name, number)
    if json_out:
        emit_json(deleted)
        return
    console.print(
        f"deleted {deleted['name']} version {deleted['version']} in {deleted['environment']} "
        f"(digest {deleted['digest'][:12]}, registered by {deleted['created_by']}) "
        f"by {deleted['deleted_by']} at {deleted['deleted_at']}",
        markup=False,
    )
