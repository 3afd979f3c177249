"""`mlgate promote`, `mlgate requests`, `mlgate inbox`: gated promotion from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, table
from mlgate.interfaces.sdk.client import Client

requests_app = typer.Typer(help="Promotion requests: evidence, approvals, rejections.", no_args_is_help=True)


def _name_version(text: str) -> tuple[str, int]:
    from mlgate.errors import ValidationError

    name, _, version = text.rpartition(":")
    if not name or not version.isdigit():
        raise ValidationError(f"expected NAME:VERSION (e.g. diabetes:1), got '{text}'")
    return name, int(version)


def _rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r["id"],
            f"{r['model_name']}:{r['source_version']}",
            f"{r['source_env']} -> {r['target_env']}",
            r["state"],
            r["requested_by"],
            f"{sum(d['decision'] == 'approve' for d in r['decisions'])}/{r['required_approvals']} {r['approver_role']}",
            r["created_at"],
        ]
        for r in rows
    ]


COLUMNS = ["id", "model", "gate", "state", "requested by", "approvals", "opened"]


def promote(
    model: Annotated[str, typer.Argument(help="NAME:VERSION in the source environment.")],
    to: Annotated[str, typer.Option("--to", help="The target environment.")],
    source: Annotated[str | None, typer.Option("--from", help="The source (default: the one before --to).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Open a promotion request: the version goes to its gate's approvers with its evidence."""
    name, version = _name_version(model)
    with Client.discover(url, token) as client:
        if source is None:
            names = [e["name"] for e in client.environments()]
            if to not in names or names.index(to) == 0:
                from mlgate.errors import ValidationError

                raise ValidationError(f"'{to}' has no environment before it; expected one of: {', '.join(names[1:])}")
            source = names[names.index(to) - 1]
        opened = client.open_request(source, name=name, version=version, to=to)
    if json_out:
        emit_json(opened)
        return
    console.print(
        f"request {opened['id']}: {name}:{version} {source} -> {to} waits for "
        f"{opened['required_approvals']} {opened['approver_role']} approval(s)"
    )


@requests_app.command("list")
def list_requests(
    env: Annotated[str, typer.Option("--env", "-e", help="Requests into or out of this environment.")] = "staging",
    state: Annotated[str | None, typer.Option(help="Only requests in this state.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Promotion requests touching an environment, newest first."""
    with Client.discover(url, token) as client:
        rows = client.requests(env, state=state)
    if json_out:
        emit_json(rows)
        return
    table(f"requests into or out of {env}", COLUMNS, _rows(rows))


@requests_app.command("show")
def show_request(
    request_id: int, url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False
) -> None:
    """A request and its evidence: digest, metrics against the champion, checks, lineage, decisions."""
    with Client.discover(url, token) as client:
        request = client.promotion_request(request_id)
    if json_out:
        emit_json(request)
        return
    evidence = request["evidence"]
    console.print(
        f"[bold]request {request['id']}[/bold]: {request['model_name']}:{request['source_version']} "
        f"{request['source_env']} -> {request['target_env']} (gate {request['gate']}) — {request['state']}"
    )
    console.print(f"requested by {request['requested_by']}; model author {request['author']}")
    console.print(f"digest {evidence.get('digest')}")
    if evidence.get("sandbox") == "none":
        console.print("[bold red]sandbox: none[/bold red]: its jobs and checks ran with the server's powers")
    elif evidence.get("sandbox"):
        console.print(f"sandbox: {evidence['sandbox']}")
    if request["failure"]:
        console.print(f"failure: {request['failure']}")
    comparison = evidence.get("comparison")
    if comparison:
        champion = comparison["champion"]
        table(
            f"metrics against the champion {champion['name']}:{champion['version']} in {request['target_env']}",
            ["metric", "candidate", "champion", "delta"],
            [[m["metric"], m["candidate"], m["champion"], m["delta"]] for m in comparison["metrics"]],
        )
    else:
        table(
            "metrics (no champion in the target yet)", ["metric", "value"], sorted(evidence.get("metrics", {}).items())
        )
    checks = evidence.get("checks") or {}
    required = request["required_checks"]
    if required or checks:
        table(
            "checks",
            ["check", "required", "status", "summary"],
            [
                [
                    name,
                    "yes" if name in required else "",
                    checks.get(name, {}).get("status", "missing"),
                    checks.get(name, {}).get("summary", ""),
                ]
                for name in sorted(set(required) | set(checks))
            ],
        )
    lineage = evidence.get("lineage") or {}
    console.print(
        f"lineage: run {lineage.get('run_id')}, code {lineage.get('snapshot_sha256') or lineage.get('code_note')}, "
        f"git {lineage.get('git_commit')}, data {', '.join(lineage.get('data') or []) or '-'}"
    )
    for decision in request["decisions"]:
        console.print(f"{decision['decision']} by {decision['actor']} at {decision['at']}: {decision['comment'] or ''}")
    console.print(f"needs {request['required_approvals']} approval(s) from a {request['approver_role']}")


@requests_app.command("approve")
def approve(
    request_id: int,
    comment: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Approve a request you may decide; the final approval starts the promotion."""
    with Client.discover(url, token) as client:
        request = client.decide(request_id, approve=True, comment=comment)
    if json_out:
        emit_json(request)
        return
    console.print(f"request {request_id}: {request['state']}")


@requests_app.command("reject")
def reject(
    request_id: int,
    comment: Annotated[str, typer.Option(help="Why: a rejection needs a reason.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Reject a request, with the reason; it closes the request."""
    with Client.discover(url, token) as client:
        request = client.decide(request_id, approve=False, comment=comment)
    if json_out:
        emit_json(request)
        return
    console.print(f"request {request_id}: {request['state']}")


def inbox(url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False) -> None:
    """Requests waiting for your decision."""
    with Client.discover(url, token) as client:
        rows = client.waiting_requests()
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("nothing waits for your decision")
        return
    table("waiting for you", COLUMNS, _rows(rows))
