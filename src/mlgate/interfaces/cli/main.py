"""The `mlgate` command: assembles the command groups and turns mlgate errors into messages and exit codes.

Imports here stay light (no MLflow, pandas or FastAPI): `mlgate --help` must answer at once.
"""

from __future__ import annotations

import typer

from mlgate.errors import MlgateError
from mlgate.interfaces.cli import (
    audit_commands,
    audit_history_commands,  # noqa: F401 (importing it adds `audit at` to the audit group)
    check_commands,
    data_commands,
    endpoint_commands,
    env_commands,
    identity_commands,
    job_commands,
    model_commands,
    monitor_commands,
    notification_commands,
    request_commands,
    rollout_commands,
    score_commands,
    setup_commands,
)
from mlgate.interfaces.cli.demo_command import demo
from mlgate.interfaces.cli.output import errors

app = typer.Typer(
    name="mlgate",
    help="mlgate: move models from dev to production through gated, access-controlled environments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(setup_commands.init)
app.command()(setup_commands.server)
app.command()(setup_commands.stop)
app.command()(demo)
app.command()(identity_commands.whoami)
app.command()(job_commands.train)
app.command()(model_commands.register)
app.command()(request_commands.promote)
app.command()(request_commands.inbox)
app.command()(check_commands.check)
app.command()(endpoint_commands.deploy)
app.command()(score_commands.score)
app.add_typer(env_commands.envs, name="env")
app.add_typer(identity_commands.users, name="user")
app.add_typer(identity_commands.tokens, name="token")
app.add_typer(audit_commands.audit, name="audit")
app.add_typer(job_commands.jobs_app, name="jobs")
app.add_typer(data_commands.data_app, name="data")
app.add_typer(model_commands.models_app, name="models")
app.add_typer(endpoint_commands.endpoints_app, name="endpoints")
app.add_typer(notification_commands.notifications_app, name="notifications")
app.add_typer(request_commands.requests_app, name="requests")
app.add_typer(rollout_commands.rollouts_app, name="rollouts")
app.add_typer(monitor_commands.monitor_app, name="monitor")


def main() -> None:
    from mlgate.interfaces.sdk.client import ApiError

    try:
        app()
    except ApiError as exc:
        errors.print(f"error ({exc.status_code} {exc.error_code}): {exc.message}", markup=False)
        raise SystemExit(1) from None
    except MlgateError as exc:
        errors.print(f"error: {exc.message}", markup=False)
        raise SystemExit(1) from None
