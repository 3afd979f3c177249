"""`mlgate user`, `mlgate token`, `mlgate whoami`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlgate.interfaces.cli.output import (
    JsonOption,
    TokenOption,
    UrlOption,
    bindings_text,
    console,
    emit_json,
    show_secret,
    table,
)
from mlgate.interfaces.sdk.client import Client

users = typer.Typer(help="People and their roles in each environment.", no_args_is_help=True)
tokens = typer.Typer(help="API tokens: shown once, stored hashed, revocable.", no_args_is_help=True)

RoleOption = Annotated[
    list[str],
    typer.Option(
        "--role",
        "-r",
        help="viewer, data-scientist, lead-data-scientist, software-developer, operator or admin; repeatable.",
    ),
]
EnvOption = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="Environment the roles are bound in; repeatable ('*' for all)."),
]


def _user_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[u["name"], u["kind"], bindings_text(u["bindings"]), u["email"]] for u in rows]


@users.command("create")
def create_user(
    name: str,
    role: RoleOption,
    env: EnvOption = None,
    email: Annotated[str | None, typer.Option(help="Where notifications go.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a user with roles bound per environment; prints their first token once."""
    with Client.discover(url, token) as client:
        created = client.create_user(name, roles=role, environments=env or [], email=email)
    if json_out:
        emit_json(created)
        return
    console.print(f"created user {name}: {bindings_text(created['user']['bindings'])}")
    show_secret(f"{name}'s token", created["token"]["token"])


@users.command("list")
def list_users(url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False) -> None:
    """Every user and their role bindings."""
    with Client.discover(url, token) as client:
        rows = client.users()
    if json_out:
        emit_json(rows)
        return
    table("users", ["name", "kind", "roles", "email"], _user_rows(rows))


@users.command("grant")
def grant(
    name: str,
    role: RoleOption,
    env: EnvOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Bind more roles to a user."""
    with Client.discover(url, token) as client:
        user = client.grant(name, roles=role, environments=env or [])
    if json_out:
        emit_json(user)
        return
    console.print(f"{name}: {bindings_text(user['bindings']) or 'no roles'}")


@users.command("revoke")
def revoke(
    name: str,
    role: RoleOption,
    env: EnvOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Remove role bindings from a user."""
    with Client.discover(url, token) as client:
        user = client.revoke_roles(name, roles=role, environments=env or [])
    if json_out:
        emit_json(user)
        return
    console.print(f"{name}: {bindings_text(user['bindings']) or 'no roles'}")


@tokens.command("create")
def create_token(
    user: Annotated[str | None, typer.Option(help="Whose token (admins); default: your own.")] = None,
    name: Annotated[str, typer.Option(help="A label to tell tokens apart.")] = "cli",
    expires_in_days: Annotated[float | None, typer.Option("--expires-in-days", help="Expiry.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an API token; it is shown once."""
    with Client.discover(url, token) as client:
        issued = client.create_token(user=user, name=name, expires_in_days=expires_in_days)
    if json_out:
        emit_json(issued)
        return
    expiry = f", expires {issued['expires_at']}" if issued["expires_at"] else ""
    console.print(f"token {issued['id']} '{issued['name']}' for {issued['user']}{expiry}")
    show_secret("the token", issued["token"])


@tokens.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option(help="Only this user's (admins); default: your own.")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user's tokens (admins).")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Tokens by id, label and prefix; never their value."""
    with Client.discover(url, token) as client:
        rows = client.tokens(user=user, mine=not (user or all_users))
    if json_out:
        emit_json(rows)
        return
    table(
        "tokens",
        ["id", "user", "name", "prefix", "created", "expires", "revoked"],
        [
            [
                t["id"],
                t["user"],
                t["name"],
                t["prefix"] + "…",
                t["created_at"],
                t["expires_at"],
                t["revoked_at"],
            ]
            for t in rows
        ],
    )


@tokens.command("revoke")
def revoke_token(
    token_id: int,
    mine: Annotated[bool, typer.Option("--mine", help="One of your own tokens (no admin role needed).")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Revoke a token: it stops working at once."""
    with Client.discover(url, token) as client:
        revoked = client.revoke_token(token_id, mine=mine)
    if json_out:
        emit_json(revoked)
        return
    console.print(f"revoked token {revoked['id']} '{revoked['name']}' of {revoked['user']}")


def whoami(url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False) -> None:
    """Who the token belongs to and its roles."""
    with Client.discover(url, token) as client:
        me = client.whoami()
    if json_out:
        emit_json(me)
        return
    console.print(f"{me['name']}: {bindings_text(me['bindings']) or 'no roles'}")
