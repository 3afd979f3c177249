"""`mlgate audit`: list events; verify the log (online, or an exported bundle offline); checkpoint; export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, errors, table
from mlgate.interfaces.sdk.client import Client

audit = typer.Typer(help="The authenticated, hash-chained audit log.", no_args_is_help=True)

BROKEN, MALFORMED = 1, 2


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


def _summary(result: dict[str, Any]) -> str:
    checkpoints = result["checkpoints"]
    text = f"OK: {result['events']} events, chain intact, MACs hold; {checkpoints} checkpoint"
    text += "" if checkpoints == 1 else "s"
    if result.get("last_checkpoint_seq"):
        text += f" hold (the last at event {result['last_checkpoint_seq']}; {result['unvouched']} events since)"
    return text + f"; key {result['key_id']}"


def _offline(bundle: Path, public_key: Path | None) -> dict[str, Any]:
    from mlgate.services.audit_bundle import BundleMalformed, verify_bundle

    try:
        pem = public_key.read_bytes() if public_key is not None else None
        with bundle.open("rb") as data:
            checked = verify_bundle(data, public_key_pem=pem)
    except (OSError, BundleMalformed) as exc:
        errors.print(f"error: the bundle {bundle} cannot be checked: {exc}")
        raise typer.Exit(MALFORMED) from None
    report = checked.report
    if checked.key_source == "bundle":
        errors.print("note: checked with the bundle's own public key; pass --public-key to pin the server's")
    return {
        "ok": report.ok,
        "events": report.events,
        "broken_seq": report.broken_seq,
        "reason": report.reason,
        "checkpoints": report.checkpoints,
        "checkpoint": report.checkpoint,
        "key_id": report.key_id,
        "last_checkpoint_seq": report.last_checkpoint_seq,
        "unvouched": report.unvouched,
        "exported_at": checked.manifest.get("exported_at"),
    }


@audit.command("verify")
def verify(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Check an exported bundle offline: no server, no secret.")
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="With --bundle: the server's public key (PEM) to hold it to.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check every event, the chain and the signed checkpoints; exits 1 naming the first bad event or the
    checkpoint the log contradicts (2: the bundle cannot be read)."""
    if bundle is not None:
        result = _offline(bundle, public_key)
    elif public_key is not None:
        errors.print("error: --public-key goes with --bundle")
        raise typer.Exit(MALFORMED)
    else:
        with Client.discover(url, token) as client:
            result = client.verify_audit()
    if json_out:
        emit_json(result)
    elif result["ok"]:
        console.print(_summary(result))
    else:
        errors.print(f"BROKEN at event {result['broken_seq']}: {result['reason']}")
    if not result["ok"]:
        raise typer.Exit(BROKEN)


@audit.command("checkpoint")
def checkpoint(url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False) -> None:
    """Sign a checkpoint of the log's head now (the server also takes them by its policy)."""
    with Client.discover(url, token) as client:
        result = client.audit_checkpoint()
    if json_out:
        emit_json(result)
    else:
        console.print(result["reason"])


@audit.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="The bundle file to write (a zip).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Write the auditors' bundle: every event, the checkpoints, the public key (verify it with
    `mlgate audit verify --bundle FILE`)."""
    partial = out.with_name(out.name + ".partial")
    try:
        with Client.discover(url, token) as client, partial.open("wb") as handle:
            size = client.export_audit(handle)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    console.print(f"wrote {out} ({size} bytes)")
