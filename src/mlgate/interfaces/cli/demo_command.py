"""`mlgate demo`: the whole lifecycle on the embedded defaults, in a fresh temporary home."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Stop everything at the end instead of leaving the server up.")
    ] = False,
    home: Annotated[
        Path | None, typer.Option(help="Folder for the demo project (default: a new temporary folder).")
    ] = None,
) -> None:
    """Run the lifecycle step by step, printing each; then leave the server running."""
    from mlgate.demo.lifecycle import run
    from mlgate.private_home import make_private

    make_private()  # the demo's home, its server and what that starts are private as any home's
    run(serve=not no_serve, folder=home)
