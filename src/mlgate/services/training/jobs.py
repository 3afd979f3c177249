"""Jobs: code snapshots in, training jobs queued, their state, logs and cancellation.

The runner (`services.training.job_runner`) moves queued jobs through the execution backend; this module is
what the API calls.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate import sandbox as sandboxes
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import CodeSnapshot, Job, utcnow
from mlgate.archives import inspect, read_member
from mlgate.config import Settings
from mlgate.domain.jobs import DataRef, JobState, TrainSpec
from mlgate.domain.permissions import Role
from mlgate.errors import ConflictError, NotFoundError, ValidationError
from mlgate.project import train_spec
from mlgate.services import audit
from mlgate.services.training import data_assets
from mlgate.snapshot import MAX_SNAPSHOT_BYTES, SNAPSHOT_CAPS

LOG_CHUNK = 256 * 1024


@dataclass(frozen=True)
class SnapshotView:
    sha256: str
    size: int
    files: int
    git_commit: str | None
    git_dirty: bool
    created: bool


@dataclass(frozen=True)
class JobView:
    id: int
    environment: str
    kind: str
    state: str
    command: str
    snapshot_sha256: str | None
    git_commit: str | None
    data_versions: dict[str, Any]
    run_ids: list[str]
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timeout_s: float
    exit_code: int | None
    error: str | None
    backend: str
    sandbox: str | None  # how it ran ('bwrap', 'none'); None before it started


def view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        environment=job.environment,
        kind=job.kind,
        state=job.state,
        command=job.command,
        snapshot_sha256=job.snapshot.sha256 if job.snapshot else None,
        git_commit=job.snapshot.git_commit if job.snapshot else None,
        data_versions=dict(job.data_versions or {}),
        run_ids=list(job.run_ids or []),
        requested_by=job.requested_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        timeout_s=job.timeout_s,
        exit_code=job.exit_code,
        error=job.error,
        backend=job.backend,
        sandbox=(job.spec or {}).get("sandbox"),
    )


def snapshot_path(settings: Settings, sha256: str) -> Path:
    return settings.home / "snapshots" / f"{sha256}.tar.gz"


def job_dir(settings: Settings, job_id: int) -> Path:
    return settings.jobs_dir / str(job_id)


def log_path(settings: Settings, job_id: int) -> Path:
    return job_dir(settings, job_id) / "job.log"


def _config_text(config: bytes | None) -> str | None:
    if config is None:
        return None
    try:
        return config.decode()
    except UnicodeDecodeError as exc:
        raise ValidationError(f"the snapshot's mlgate.yaml is not UTF-8 text: {exc}") from exc


def store_snapshot(
    db: Database,
    settings: Settings,
    *,
    actor: str,
    env: str,
    data: bytes,
    git_commit: str | None,
    git_dirty: bool,
) -> SnapshotView:
    """Keep an uploaded snapshot, once per digest; it must hold an mlgate.yaml with a `train` section."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ValidationError(f"the code snapshot is over the {MAX_SNAPSHOT_BYTES // (1024 * 1024)} MiB limit")
    # Walked whole now, so that a job never starts from an archive it cannot unpack.
    listing = inspect(data, what="code snapshot", caps=SNAPSHOT_CAPS, keep={"mlgate.yaml"})
    files = listing.files
    config = _config_text(listing.kept.get("mlgate.yaml"))
    if config is None:
        raise ValidationError("the code snapshot has no mlgate.yaml at its top level")
    train_spec(config, source="the snapshot's mlgate.yaml")
    sha = hashlib.sha256(data).hexdigest()
    path = snapshot_path(settings, sha)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A private partial file: two uploads of the same snapshot at once must not write into one.
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{sha}.", suffix=".partial")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    with db.write() as session:
        row = session.execute(
            select(CodeSnapshot).where(CodeSnapshot.environment == env, CodeSnapshot.sha256 == sha)
        ).scalar_one_or_none()
        created = row is None
        if row is None:
            row = CodeSnapshot(
                environment=env,
                sha256=sha,
                size=len(data),
                files=files,
                git_commit=git_commit,
                git_dirty=git_dirty,
                created_by=actor,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            audit.record(
                session,
                actor=actor,
                action="snapshot.upload",
                environment=env,
                subject=f"snapshot:{sha[:12]}",
                payload={"sha256": sha, "git_commit": git_commit, "size": len(data)},
            )
        return SnapshotView(sha, row.size, row.files, row.git_commit, row.git_dirty, created)


def submit_train(
    db: Database,
    settings: Settings,
    *,
    actor: str,
    env: str,
    snapshot_sha256: str,
    backend: str | None = None,
    versions: dict[str, int] | None = None,
    origin: dict[str, Any] | None = None,
    acts_as: Role | None = None,
) -> JobView:
    """Queue the snapshot's `train` command; its data references are pinned to versions now (`versions`
    pins some to given versions instead: a retraining on data made for it). `origin` is kept in the job's
    spec: what automation submitted it for (a monitor's alert), so that a restart can find it again.
    `acts_as`: the role the job's token has in its environment instead of the actor's bindings (for jobs
    the server submits as `system`); kept in the spec too. Refused (503) where no sandbox can be made."""
    sandboxes.from_settings(settings).check()
    snapshot = _stored_snapshot(db, env=env, sha256=snapshot_sha256)
    with snapshot_path(settings, snapshot.sha256).open("rb") as archive:
        config = _config_text(read_member(archive, "mlgate.yaml", what="code snapshot", caps=SNAPSHOT_CAPS))
    spec = train_spec(config or "", source="the snapshot's mlgate.yaml")
    pinned = _pinned_data(db, env=env, spec=spec, versions=versions or {})
    stored = dataclasses.asdict(spec) | {"data": [str(r) for r in spec.data]} | ({"origin": origin} if origin else {})
    if acts_as is not None:
        stored["acts_as"] = acts_as.value
    with db.write() as session:
        job = Job(
            environment=env,
            kind="train",
            state=JobState.QUEUED.value,
            snapshot_id=snapshot.id,
            command=spec.command,
            spec=stored,
            data_versions=pinned,
            run_ids=[],
            requested_by=actor,
            created_at=utcnow(),
            timeout_s=spec.timeout_minutes * 60,
            backend=backend or settings.execution.backend,
            cancel_requested=False,
        )
        session.add(job)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="job.submit",
            environment=env,
            subject=f"job:{job.id}",
            payload={"command": spec.command, "snapshot": snapshot.sha256, "data": pinned},
        )
        session.refresh(job)
        return view(job)


def _stored_snapshot(db: Database, *, env: str, sha256: str) -> CodeSnapshot:
    """The code snapshot with this digest uploaded to `env`."""
    with db.read() as session:
        snapshot = session.execute(
            select(CodeSnapshot).where(CodeSnapshot.environment == env, CodeSnapshot.sha256 == sha256)
        ).scalar_one_or_none()
    if snapshot is None:
        raise NotFoundError(f"no code snapshot {sha256[:12]} in '{env}': upload it first", details={"snapshot": sha256})
    return snapshot


def _pinned_data(db: Database, *, env: str, spec: TrainSpec, versions: dict[str, int]) -> dict[str, int]:
    """The version of each data asset the train section names: the latest, or the one `versions` gives."""
    pinned = {ref.name: data_assets.resolve(db, env, ref).version for ref in spec.data}
    unknown = sorted(set(versions) - set(pinned))
    if unknown:
        raise ValidationError(
            f"the snapshot's train.data does not name {', '.join(unknown)}; it names: {', '.join(pinned) or 'nothing'}",
            details={"data": unknown},
        )
    for name, version in versions.items():
        pinned[name] = data_assets.resolve(db, env, DataRef(name, version)).version
    return pinned


def _get(session: Session, env: str, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.environment != env:
        raise NotFoundError(f"no job {job_id} in '{env}'", details={"job": job_id, "environment": env})
    return job


def get(db: Database, env: str, job_id: int) -> JobView:
    with db.read() as session:
        return view(_get(session, env, job_id))


def list_jobs(db: Database, env: str, *, state: str | None = None, limit: int = 50) -> list[JobView]:
    query = select(Job).where(Job.environment == env).order_by(Job.id.desc()).limit(limit)
    if state:
        if state not in JobState.__members__.values():
            raise ValidationError(
                f"unknown job state '{state}'; expected one of: {', '.join(s.value for s in JobState)}"
            )
        query = query.where(Job.state == state)
    with db.read() as session:
        return [view(j) for j in session.execute(query).scalars()]


def cancel(db: Database, *, actor: str, env: str, job_id: int) -> JobView:
    """A queued job is cancelled at once; a running one when the runner has stopped it."""
    with db.write() as session:
        job = _get(session, env, job_id)
        state = JobState(job.state)
        if state.finished:
            raise ConflictError(f"job {job_id} already {state.value}", details={"state": state.value})
        if state is JobState.QUEUED:
            job.state, job.finished_at = JobState.CANCELLED.value, utcnow()
        job.cancel_requested, job.error = True, f"cancelled by {actor}"
        audit.record(session, actor=actor, action="job.cancel", environment=env, subject=f"job:{job_id}")
        session.flush()
        return view(job)


def read_log(settings: Settings, job_id: int, *, offset: int = 0, final: bool = False) -> tuple[str, int, bool]:
    """Log text from a byte offset, the offset to ask from next, and whether this read reached the end.

    A character split across reads (a chunk boundary, or a line the job is still writing) is held
    back until its last byte is there, so a follower never sees it garbled; `final` (the job has
    ended, nothing more will come) lets the log's last bytes through whatever they are.
    """
    path = log_path(settings, job_id)
    if offset < 0:
        raise ValidationError("offset must be 0 or more")
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read(LOG_CHUNK)
            at_end = not handle.read(1)
    except FileNotFoundError:
        return "", offset, True
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(chunk, final=final and at_end)
    pending = len(decoder.getstate()[0])
    return text, offset + len(chunk) - pending, at_end


def log_tail(settings: Settings, job_id: int, lines: int = 30) -> tuple[str, int]:
    """The last lines of the log, and the log's size (the offset to follow it from)."""
    path = log_path(settings, job_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "", 0
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:]), len(data)


def lineage_tags(db: Database, job_id: int) -> dict[str, str]:
    """The MLflow tags that tie a job's runs to what ran: the job, its code snapshot, its data versions."""
    with db.read() as session:
        job = session.get(Job, job_id)
        if job is None:
            return {}
        tags = {"mlgate.job_id": str(job.id)}
        if job.snapshot is not None:
            tags["mlgate.snapshot_sha256"] = job.snapshot.sha256
            if job.snapshot.git_commit:
                tags["mlgate.git_commit"] = job.snapshot.git_commit
                tags["mlgate.git_dirty"] = str(job.snapshot.git_dirty).lower()
        for name, version in sorted((job.data_versions or {}).items()):
            tags[f"mlgate.data.{name}"] = f"{name}@{version}"
        return tags


def add_run(db: Database, *, job_id: int, run_id: str) -> None:
    with db.write() as session:
        job = session.get(Job, job_id)
        if job is not None and run_id not in (job.run_ids or []):
            job.run_ids = [*(job.run_ids or []), run_id]
