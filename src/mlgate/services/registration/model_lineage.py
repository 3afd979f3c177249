"""Lineage of a model version: the run, the mlgate job behind it (code snapshot, git commit, data
versions) and the training data, as registration records it.

The job's row is the source, not the run's `mlgate.*` tags: anyone who can log runs can set tags, so a
run counts as a job's only if that job recorded it when the door created it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlgate.adapters.mlflow.registry import LoggedModel, RunRecord
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Job
from mlgate.domain.jobs import DataRef
from mlgate.domain.model_card import NO_SNAPSHOT
from mlgate.errors import ValidationError
from mlgate.services.training import data_assets

JOB_TAG = "mlgate.job_id"


@dataclass(frozen=True)
class JobFacts:
    id: int
    snapshot_sha256: str | None
    git_commit: str | None
    git_dirty: bool
    data: list[str]
    label: str | None


def job_of(db: Database, env: str, run: RunRecord | None) -> JobFacts | None:
    """The mlgate job that produced the run, if its tag names one and that job did record the run.

    The job's row, not the run's tags, is the source: tags can be set by anyone who can log runs.
    """
    raw = (run.tags.get(JOB_TAG) if run else None) or ""
    if run is None or not raw.isdigit():
        return None
    with db.read() as session:
        job = session.get(Job, int(raw))
        if job is None or job.environment != env or run.run_id not in (job.run_ids or []):
            return None
        snapshot = job.snapshot
        return JobFacts(
            id=job.id,
            snapshot_sha256=snapshot.sha256 if snapshot else None,
            git_commit=snapshot.git_commit if snapshot else None,
            git_dirty=bool(snapshot.git_dirty) if snapshot else False,
            data=sorted(f"{name}@{version}" for name, version in (job.data_versions or {}).items()),
            label=(job.spec or {}).get("label"),
        )


def training_data(
    db: Database, env: str, *, asked: DataRef | None, job: JobFacts | None
) -> data_assets.DataAssetView | None:
    if asked is not None:
        return data_assets.resolve(db, env, asked)
    used = job.data if job else []
    if len(used) > 1:
        raise ValidationError(
            f"the run's job used several data assets ({', '.join(used)}): say which one the model was trained "
            "on with --data NAME@VERSION",
            details={"data": used},
        )
    return data_assets.resolve(db, env, DataRef.parse(used[0])) if used else None


def lineage(
    *,
    model: LoggedModel,
    run: RunRecord | None,
    job: JobFacts | None,
    training: data_assets.DataAssetView | None,
    label: str | None,
    notes: list[str],
) -> dict[str, Any]:
    data = sorted({*(job.data if job else []), *([training.ref] if training else [])})
    return {
        "run_id": run.run_id if run else None,
        "run_name": run.name if run else None,
        "experiment_id": run.experiment_id if run else model.experiment_id,
        "model_id": model.model_id,
        "model_name": model.name,
        "params": dict(run.params) if run else {},
        "metrics": dict(run.metrics) if run else {},
        "job_id": job.id if job else None,
        "snapshot_sha256": job.snapshot_sha256 if job else None,
        "git_commit": job.git_commit if job else None,
        "git_dirty": job.git_dirty if job else None,
        "code_note": None if job and job.snapshot_sha256 else NO_SNAPSHOT,
        "data": data,
        "training_data": (
            {"ref": training.ref, "sha256": training.sha256, "rows": training.rows} if training else None
        ),
        "label": label,
        "notes": notes,
    }
