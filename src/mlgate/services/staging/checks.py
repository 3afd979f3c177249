"""Checks: named verifications of a model version in staging, each run recorded as a `CheckRecord`.

A record is `running` from the moment a check is asked for until its result is in. With no job yet it
waits for the staging pipeline (`services.staging.pipeline`) to start it; with a job, the pipeline
records the result once the job has ended. So a server that stops half-way loses nothing: the next one
starts what was waiting and collects what ran.

- `lint`, `unit-tests` and the project's named commands run as `check` jobs on the code snapshot that
  trained the model: the job runner unpacks it and runs the command there, like a training job.
  A model without a snapshot (logged from a notebook) fails them: there is no code to check. Lint runs
  with the policy's ruff configuration when it gives one (`domain.command_checks`), and the evidence says
  whose configuration was used and when the author's own tests decided the verdict.
- `model-validation` is judged by the server (`services.staging.validation`): verified copies of the candidate
  and the production champion each score the held-out features of a data asset registered in staging
  in their own sandbox (`services.registration.scoring`); the labels, the metric and the verdict stay in the server.
- `endpoint-tests` runs in the server (`services.staging.endpoint_tests`): it needs the serving host and key.

The gate reads the latest record of each name (`services.promotion.evidence.check_results`), so running a
check again replaces its earlier result.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import CheckRecord, CodeSnapshot, Job, ModelVersion, PromotionRequest, utcnow
from mlgate.adapters.sql.queries import model_version
from mlgate.config import CommandCheckConfig, Settings
from mlgate.domain.command_checks import evidence_notes, runs_pytest, with_policy_config
from mlgate.domain.environments import EnvironmentKind
from mlgate.domain.events import ChecksRequested
from mlgate.domain.gates import RequestState
from mlgate.domain.jobs import JobState
from mlgate.domain.permissions import SYSTEM
from mlgate.errors import NotFoundError, ValidationError
from mlgate.services import audit
from mlgate.services.events import NO_EVENTS, Publisher
from mlgate.services.notifications import outbox
from mlgate.services.training import jobs

CHECK_KIND = "check"
MODEL_VALIDATION = "model-validation"
ENDPOINT_TESTS = "endpoint-tests"
RUNNING, PASSED, FAILED, ERROR = "running", "passed", "failed", "error"
NO_SNAPSHOT = (
    "no code snapshot: the model was not trained by an mlgate job (logged from a notebook?), "
    "so there is no code to check"
)
LOG_EXCERPT_BYTES = 8 * 1024
JUNIT_FILE = "junit.xml"  # in the job's working folder: the only one its sandbox may write
# model-validation once ran as a job that wrote its own verdict, which its model could forge: a record
# still waiting on such a job is never passed on what that job says.
LEGACY_VALIDATION_JOB = "model-validation no longer runs as a job (its model could write its own verdict); run it again"
JUNIT_HEAD_BYTES = 64 * 1024
TESTSUITE = re.compile(r"<testsuite\s[^>]*>")
ATTRIBUTE = re.compile(r'(tests|failures|errors|skipped)="(\d+)"')


@dataclass(frozen=True)
class CheckView:
    id: int
    environment: str
    model_name: str
    model_version: int
    name: str
    status: str
    summary: str
    log_excerpt: str
    artifacts: list[dict[str, Any]]
    job_id: int | None
    started_at: datetime
    finished_at: datetime | None


def _view(row: CheckRecord, version: ModelVersion) -> CheckView:
    return CheckView(
        id=row.id,
        environment=version.environment,
        model_name=version.name,
        model_version=version.version,
        name=row.name,
        status=row.status,
        summary=row.summary,
        log_excerpt=row.log_excerpt,
        artifacts=list(row.artifacts or []),
        job_id=row.job_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def configured(settings: Settings) -> list[str]:
    """Every check the policy knows, in the order they run."""
    return [*settings.checks.commands, MODEL_VALIDATION, ENDPOINT_TESTS]


def _version(session: Session, env: str, name: str, version: int) -> ModelVersion:
    row = model_version(session, environment=env, name=name, version=version)
    if row is None:
        raise NotFoundError(f"no version {name}:{version} in '{env}'", details={"model": name, "version": version})
    return row


# -- asking for checks -------------------------------------------------------------------------------


def request_runs(
    db: Database,
    settings: Settings,
    *,
    actor: str,
    env: str,
    name: str,
    version: int,
    only: list[str] | None = None,
    events: Publisher = NO_EVENTS,
) -> list[CheckView]:
    """Records, `running`, for the checks asked (all configured by default); the pipeline starts them
    (`ChecksRequested` wakes it). A check still running on the version is not asked twice: its record is
    returned instead."""
    if settings.environment(env).kind is not EnvironmentKind.STAGING:
        raise ValidationError(f"checks run in staging, and '{env}' is not a staging environment")
    known = configured(settings)
    wanted = list(dict.fromkeys(only)) if only else known
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValidationError(
            f"unknown check(s) {', '.join(unknown)}; configured: {', '.join(known)}",
            details={"unknown": unknown, "configured": known},
        )
    with db.write() as session:
        record = _version(session, env, name, version)
        running = {
            row.name: row
            for row in session.execute(
                select(CheckRecord).where(CheckRecord.model_version_id == record.id, CheckRecord.status == RUNNING)
            ).scalars()
        }
        rows = []
        for check in wanted:
            row = running.get(check)
            if row is None:
                row = CheckRecord(
                    model_version_id=record.id,
                    name=check,
                    status=RUNNING,
                    summary="waiting to start",
                    log_excerpt="",
                    artifacts=[],
                    started_at=utcnow(),
                )
                session.add(row)
            rows.append(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="checks.run",
            environment=env,
            subject=f"model:{name}:{version}",
            payload={"checks": wanted, "records": [r.id for r in rows]},
        )
        views = [_view(row, record) for row in rows]
    events.publish(ChecksRequested(environment=env, name=name, version=version))
    return views


def record_unknown(db: Database, *, model_version_id: int, names: list[str]) -> None:
    """A gate requires checks the policy does not configure: say so as their (error) record."""
    with db.write() as session:
        for check in names:
            session.add(
                CheckRecord(
                    model_version_id=model_version_id,
                    name=check,
                    status=ERROR,
                    summary=f"the gate requires '{check}' but no such check is configured under `checks:`",
                    log_excerpt="",
                    artifacts=[],
                    started_at=utcnow(),
                    finished_at=utcnow(),
                )
            )


def list_checks(db: Database, *, env: str, name: str, version: int) -> list[CheckView]:
    """Every record of the version, oldest first (the last of each name is the one the gate reads)."""
    with db.read() as session:
        record = _version(session, env, name, version)
        rows = session.execute(
            select(CheckRecord).where(CheckRecord.model_version_id == record.id).order_by(CheckRecord.id)
        ).scalars()
        return [_view(row, record) for row in rows]


# -- what the pipeline works on ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A record waiting to start, with what starting it needs to know."""

    record_id: int
    name: str
    model_version_id: int
    environment: str
    model_name: str
    model_version: int
    digest: str
    snapshot_sha256: str | None
    label: str | None


def waiting(db: Database) -> list[Pending]:
    with db.read() as session:
        rows = session.execute(
            select(CheckRecord, ModelVersion)
            .join(ModelVersion, ModelVersion.id == CheckRecord.model_version_id)
            .where(CheckRecord.status == RUNNING, CheckRecord.job_id.is_(None))
            .order_by(CheckRecord.id)
        ).all()
        return [
            Pending(
                record_id=row.id,
                name=row.name,
                model_version_id=version.id,
                environment=version.environment,
                model_name=version.name,
                model_version=version.version,
                digest=version.digest,
                snapshot_sha256=(version.lineage or {}).get("snapshot_sha256"),
                label=(version.lineage or {}).get("label"),
            )
            for row, version in rows
        ]


def with_jobs(db: Database) -> list[tuple[int, int]]:
    """(record id, job id) of the records whose job may have ended."""
    with db.read() as session:
        rows = session.execute(
            select(CheckRecord.id, CheckRecord.job_id).where(
                CheckRecord.status == RUNNING, CheckRecord.job_id.is_not(None)
            )
        ).all()
        return [(record_id, int(job_id)) for record_id, job_id in rows if job_id is not None]


def finish(
    db: Database,
    settings: Settings,
    record_id: int,
    *,
    status: str,
    summary: str,
    log_excerpt: str = "",
    artifacts: list[dict[str, Any]] | None = None,
    base_url: str,
) -> bool:
    """Record a result (once). A check that did not pass on a version with an open request tells the
    requester, so they need not wait for an approver to find out."""
    with db.write() as session:
        row = session.get(CheckRecord, record_id)
        if row is None or row.status != RUNNING:
            return False
        row.status, row.summary, row.log_excerpt = status, summary[:2000], log_excerpt
        row.artifacts, row.finished_at = artifacts or [], utcnow()
        version = session.get(ModelVersion, row.model_version_id)
        assert version is not None
        audit.record(
            session,
            actor=SYSTEM,
            action=f"check.{status}",
            environment=version.environment,
            subject=f"model:{version.name}:{version.version}",
            payload={"check": row.name, "record": row.id, "job_id": row.job_id, "summary": row.summary},
        )
        if status != PASSED:
            requests = session.execute(
                select(PromotionRequest).where(
                    PromotionRequest.model_version_id == version.id, PromotionRequest.state == RequestState.OPEN.value
                )
            ).scalars()
            for request in requests:
                if row.name in request.required_checks:
                    outbox.emit(
                        session,
                        settings,
                        event="request.checks-failed",
                        request=request,
                        recipients={request.requested_by, request.author},
                        base_url=base_url,
                        note=f"{row.name} {status}: {row.summary}",
                    )
        return True


# -- checks run as jobs ------------------------------------------------------------------------------


def _with_junit(command: str) -> str:
    """pytest leaves a JUnit XML report in the job's working folder, as the check's artifact."""
    if runs_pytest(command) and not any(w.startswith("--junitxml") for w in shlex.split(command)):
        return f"{command} --junitxml={JUNIT_FILE}"
    return command


def submit_job(
    db: Database,
    *,
    backend: str,
    record_id: int,
    env: str,
    command: str,
    timeout_s: float,
    snapshot_sha256: str | None = None,
    data_versions: dict[str, int] | None = None,
) -> int:
    """A `check` job the job runner starts (snapshot unpacked, data materialized), tied to the record."""
    with db.write() as session:
        snapshot_id = None
        if snapshot_sha256 is not None:
            snapshot = session.execute(
                select(CodeSnapshot).where(CodeSnapshot.sha256 == snapshot_sha256).order_by(CodeSnapshot.id).limit(1)
            ).scalar_one_or_none()
            if snapshot is None:
                raise NotFoundError(f"the code snapshot {snapshot_sha256[:12]} is no longer stored")
            snapshot_id = snapshot.id
        job = Job(
            environment=env,
            kind=CHECK_KIND,
            state=JobState.QUEUED.value,
            snapshot_id=snapshot_id,
            command=command,
            spec={"command": command, "environment": "inherit", "check_record": record_id},
            data_versions=dict(data_versions or {}),
            run_ids=[],
            requested_by=SYSTEM,
            created_at=utcnow(),
            timeout_s=timeout_s,
            backend=backend,
            cancel_requested=False,
        )
        session.add(job)
        session.flush()
        row = session.get(CheckRecord, record_id)
        assert row is not None
        row.job_id, row.summary = job.id, f"job {job.id}: {command}"
        audit.record(
            session,
            actor=SYSTEM,
            action="job.submit",
            environment=env,
            subject=f"job:{job.id}",
            payload={"command": command, "check_record": record_id, "snapshot": snapshot_sha256},
        )
        return job.id


def start_command(
    db: Database, settings: Settings, pending: Pending, config: CommandCheckConfig, *, base_url: str
) -> None:
    if not pending.snapshot_sha256:
        finish(db, settings, pending.record_id, status=FAILED, summary=NO_SNAPSHOT, base_url=base_url)
        return
    # The policy's lint configuration goes on the command line: no file in the snapshot can replace it.
    command = config.command if config.config is None else with_policy_config(config.command, config.config)
    submit_job(
        db,
        backend=settings.execution.backend,
        record_id=pending.record_id,
        env=pending.environment,
        command=_with_junit(command),
        timeout_s=config.timeout_minutes * 60,
        snapshot_sha256=pending.snapshot_sha256,
    )


def log_tail(path: Path, limit: int = LOG_EXCERPT_BYTES) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, 2)
            size = log.tell()
            log.seek(max(0, size - limit))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return text if size <= limit else text.partition("\n")[2]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[mlgate]")]
    return lines[-1][:300] if lines else ""


def _artifact(name: str, path: Path) -> dict[str, Any]:
    return {"name": name, "path": str(path), "size": path.stat().st_size}


def _junit_counts(path: Path) -> str | None:
    """Totals from the report's <testsuite> attributes; read as text, never as XML: the job's code
    wrote the file and an XML parser would expand whatever entities it declares."""
    try:
        with path.open("rb") as report:  # the job decided its size: read no more than the head
            text = report.read(JUNIT_HEAD_BYTES).decode(errors="replace")
    except OSError:
        return None
    suites = [dict(ATTRIBUTE.findall(tag)) for tag in TESTSUITE.findall(text)]
    if not suites:
        return None
    total = {k: sum(int(s.get(k, "0") or 0) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    return (
        f"{total['tests']} tests: {total['failures']} failed, {total['errors']} errors, "
        f"{total['skipped']} skipped (JUnit report)"
    )


def collect(db: Database, settings: Settings, record_id: int, job_id: int, *, base_url: str) -> bool:
    """If the record's job has ended, record its result: exit code 0 passes; a command that could not
    run (no start, time-out, lost, cancelled) is an error, not a failure of the code."""
    with db.read() as session:
        job = session.get(Job, job_id)
        row = session.get(CheckRecord, record_id)
        if job is None or row is None:
            return False
        state, exit_code, error, command, check = JobState(job.state), job.exit_code, job.error, job.command, row.name
    if not state.finished:
        return False
    folder = jobs.job_dir(settings, job_id)
    logfile = jobs.log_path(settings, job_id)
    excerpt = log_tail(logfile)
    artifacts = [_artifact("job.log", logfile)] if logfile.is_file() else []
    junit = folder / "work" / JUNIT_FILE
    # the job wrote it: a symlink could point at any file of the server's
    has_junit = junit.is_file() and not junit.is_symlink()
    if has_junit:
        artifacts.append(_artifact(JUNIT_FILE, junit))
    if check == MODEL_VALIDATION:
        status, summary = ERROR, LEGACY_VALIDATION_JOB
    elif state is JobState.SUCCEEDED:
        status, summary = PASSED, f"`{command}` passed: {_last_line(excerpt)}"
    elif exit_code is not None:
        status = FAILED
        summary = f"`{command}` exited with code {exit_code}: {_last_line(excerpt)}"
    else:
        status, summary = ERROR, f"job {job_id} {state.value}: {error or 'no exit status'}"
    counts = _junit_counts(junit) if has_junit else None
    if counts:
        summary = f"{summary} [{counts}]"
    policy_config = "--isolated" in shlex.split(command or "")
    for key, note in evidence_notes(command or "", policy_config=policy_config).items():
        summary = f"{summary} [{key.replace('_', ' ')}: {note}]"
    return finish(
        db,
        settings,
        record_id,
        status=status,
        summary=summary,
        log_excerpt=excerpt,
        artifacts=artifacts,
        base_url=base_url,
    )
