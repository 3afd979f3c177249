"""`mlgate train` and `mlgate jobs`: run the project's training in an environment and follow it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, errors, table
from mlgate.interfaces.sdk.client import Client

jobs_app = typer.Typer(help="Jobs: training runs on the execution backend.", no_args_is_help=True)

EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.")]
POLL_S = 1.0


def _project_root(path: Path) -> Path:
    from mlgate.config import CONFIG_FILE, find_config
    from mlgate.errors import ValidationError

    config = find_config(path)
    if config is None:
        raise ValidationError(f"no {CONFIG_FILE} in {path.resolve()} or above: the project to train needs one")
    return config.parent


def follow(client: Client, env: str, job_id: int, *, out: Any) -> dict[str, Any]:
    """Print the job's log as it grows until the job has ended; returns the final job."""
    offset = 0
    while True:
        chunk = client.job_log(env, job_id, offset=offset)
        if chunk["text"]:
            out.write(chunk["text"])
            out.flush()
        offset = chunk["offset"]
        if chunk["finished"]:
            return client.job(env, job_id)
        if not chunk["text"]:
            time.sleep(POLL_S)


def _report(job: dict[str, Any]) -> None:
    if job["state"] == "succeeded":
        runs = ", ".join(job["run_ids"]) or "none"
        console.print(f"job {job['id']} succeeded; MLflow runs: {runs}")
        return
    error = job["error"] or ""
    exit_code = job["exit_code"]
    shown = f" (exit code {exit_code})" if exit_code is not None and str(exit_code) not in error else ""
    errors.print(f"job {job['id']} {job['state']}: {error}{shown}", markup=False)


def train(
    env: EnvOption = "dev",
    path: Annotated[Path, typer.Option(help="The project folder (where its mlgate.yaml is).")] = Path("."),
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job's log until it ends.")] = True,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Snapshot the project's code, upload it and run its `train` command in the environment."""
    from mlgate.snapshot import pack

    root = _project_root(path)
    snapshot = pack(root)
    with Client.discover(url, token) as client:
        uploaded = client.upload_snapshot(
            env, snapshot.data, git_commit=snapshot.git_commit, git_dirty=snapshot.git_dirty
        )
        job = client.submit_job(env, snapshot=uploaded["sha256"])
        commit = (
            f", git {snapshot.git_commit[:12]}{' (dirty)' if snapshot.git_dirty else ''}" if snapshot.git_commit else ""
        )
        note = f"code snapshot {snapshot.sha256[:12]} ({snapshot.files} files{commit}); job {job['id']} queued in {env}"
        (errors if json_out else console).print(note)
        if wait:
            try:
                job = follow(client, env, job["id"], out=sys.stderr if json_out else sys.stdout)
            except KeyboardInterrupt:
                errors.print(
                    f"\nstopped following; job {job['id']} goes on: `mlgate jobs logs {job['id']} --follow`"
                    f" or `mlgate jobs cancel {job['id']}`",
                    markup=False,
                )
                raise typer.Exit(130) from None
    if json_out:
        emit_json(job)
    elif wait:
        _report(job)
    if wait and job["state"] != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("list")
def list_jobs(
    env: EnvOption = "dev",
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """The environment's jobs, newest first."""
    with Client.discover(url, token) as client:
        rows = client.jobs(env, state=state, limit=limit)
    if json_out:
        emit_json(rows)
        return
    table(
        f"jobs in {env}",
        ["id", "state", "by", "created", "exit", "runs", "command"],
        [
            [j["id"], j["state"], j["requested_by"], j["created_at"], j["exit_code"], len(j["run_ids"]), j["command"]]
            for j in rows
        ],
    )


@jobs_app.command("show")
def show_job(
    job_id: int,
    env: EnvOption = "dev",
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """One job: its state, command, code, data, runs; a failed job's last log lines."""
    with Client.discover(url, token) as client:
        job = client.job(env, job_id)
        tail = ""
        if job["state"] == "failed":
            tail = client.job_log(env, job_id, tail=20)["text"]
    if json_out:
        emit_json(job)
        return
    table(
        f"job {job_id}",
        ["", ""],
        [
            ["state", job["state"]],
            ["requested by", job["requested_by"]],
            ["command", job["command"]],
            ["sandbox", _sandbox_text(job.get("sandbox"))],
            ["code snapshot", job["snapshot_sha256"]],
            ["git commit", job["git_commit"] or "-"],
            ["data", ", ".join(f"{k}@{v}" for k, v in job["data_versions"].items()) or "-"],
            ["MLflow runs", ", ".join(job["run_ids"]) or "-"],
            ["created / started / finished", f"{job['created_at']} / {job['started_at']} / {job['finished_at']}"],
            ["exit code", job["exit_code"]],
            ["error", job["error"] or "-"],
        ],
    )
    if tail:
        console.print("last log lines:")
        typer.echo(tail)


@jobs_app.command("logs")
def job_logs(
    job_id: int,
    env: EnvOption = "dev",
    follow_log: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The job's log."""
    with Client.discover(url, token) as client:
        if follow_log:
            follow(client, env, job_id, out=sys.stdout)
            return
        offset = 0
        while True:
            chunk = client.job_log(env, job_id, offset=offset)
            sys.stdout.write(chunk["text"])
            if not chunk["text"]:
                break
            offset = chunk["offset"]


@jobs_app.command("cancel")
def cancel_job(
    job_id: int,
    env: EnvOption = "dev",
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Cancel a queued or running job."""
    with Client.discover(url, token) as client:
        job = client.cancel_job(env, job_id)
    if json_out:
        emit_json(job)
        return
    console.print(f"job {job_id}: {job['state']}{' (stopping)' if job['state'] == 'running' else ''}")


def _sandbox_text(mode: str | None) -> str:
    if mode == "none":
        return "none: ran with the server's powers (execution.sandbox: none)"
    return mode or "-"
