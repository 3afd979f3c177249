"""`mlgate init`, `mlgate server`, `mlgate stop`: the commands that work on the home directly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlgate.interfaces.cli.output import console, emit_json, show_secret

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="The mlgate.yaml (default: the nearest one above this folder)."),
]


def init(
    config: ConfigOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Create the home, migrate the control database, create each environment's stores and the first admin."""
    from mlgate.config import CONFIG_FILE, default_config_text, load_settings
    from mlgate.private_home import make_private
    from mlgate.services.setup import initialize

    path = config or Path.cwd() / CONFIG_FILE
    wrote_config = False
    if not path.exists():
        path.write_text(default_config_text())
        wrote_config = True
    settings = load_settings(path)
    make_private()  # the project's mlgate.yaml above keeps its usual mode; the home does not
    report = initialize(settings)
    if json_out:
        emit_json(
            {
                "config": str(settings.config_path),
                "home": str(settings.home),
                "wrote_config": wrote_config,
                "created": report.created,
                "admin_token": report.admin_token,
                "tightened": report.tightened,
            }
        )
        return
    if wrote_config:
        console.print(f"wrote a default {path} (commented; edit it to change environments and ports)")
    if report.tightened:
        console.print(
            f"tightened permissions of {report.tightened} files and folders under {settings.home}: "
            "group and others had access"
        )
    if not report.created and report.admin_token is None:
        if not report.tightened:
            console.print(f"already initialized: nothing to do ({settings.home})")
        return
    console.print(f"initialized {settings.home}")
    for line in report.created:
        console.print(f"  created {line}")
    if report.admin_token:
        show_secret("first admin user 'admin'; its token", report.admin_token)
        console.print("next: `mlgate server`, then `export MLGATE_TOKEN=<the token above>`")


def server(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port; 0 picks a free one).")] = None,
) -> None:
    """Run the control plane: REST API, the MLflow door of each environment, and what it supervises."""
    from mlgate.adapters.sql import migrate
    from mlgate.adapters.sql.database import Database
    from mlgate.config import load_settings
    from mlgate.errors import ConfigError, ConflictError
    from mlgate.runtime import running_server, serve

    settings = load_settings(config)
    running = running_server(settings)
    if running:
        raise ConflictError(f"a server of this home already runs at {running.url} (pid {running.pid})")
    db = Database(settings.database_url)
    try:
        initialized = settings.home.exists() and migrate.current_revision(db) is not None
    finally:
        db.dispose()
    if not initialized:
        raise ConfigError(f"the home {settings.home} is not initialized: run `mlgate init` first")
    serve(settings, host=host or settings.server_host, port=settings.server_port if port is None else port)


def stop(config: ConfigOption = None) -> None:
    """Stop this project's server and everything it started."""
    from mlgate.config import load_settings
    from mlgate.runtime import stop as stop_server

    stopped = stop_server(load_settings(config))
    if not stopped:
        console.print("no server is running for this home")
    for line in stopped:
        console.print(f"stopped {line}")
