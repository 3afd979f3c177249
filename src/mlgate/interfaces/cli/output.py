"""How the CLI shows results: rich tables for people, `--json` for machines, errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

# Piped output (CI logs, `| less`) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, soft_wrap=True)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="MLGATE_URL", help="Server address (default: this project's running server)."),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="MLGATE_TOKEN", help="API token.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(grid)


def bindings_text(bindings: Iterable[dict[str, str]]) -> str:
    by_role: dict[str, list[str]] = {}
    for b in bindings:
        by_role.setdefault(b["role"], []).append(b["environment"])
    return "; ".join(f"{role} @ {', '.join(envs)}" for role, envs in sorted(by_role.items()))


def show_secret(label: str, value: str) -> None:
    console.print(f"{label} (shown once, store it now):")
    typer.echo(f"  {value}")
