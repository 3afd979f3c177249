"""Jobs of an environment: upload a code snapshot, start a training job, follow it, cancel it."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Query, Request, status

from mlgate.domain.jobs import JobState
from mlgate.domain.permissions import Action, Principal
from mlgate.interfaces.api.deps import ContextDep, Permission, Reader
from mlgate.interfaces.api.params import Offset, RowId
from mlgate.interfaces.api.schemas.training import JobCreate, JobLog, JobPublic, JobsPublic, SnapshotPublic
from mlgate.interfaces.api.uploads import read_body
from mlgate.services.training import jobs
from mlgate.snapshot import MAX_SNAPSHOT_BYTES

router = APIRouter(prefix="/api/v1/environments/{env}", tags=["jobs"])

Trainer = Annotated[Principal, Depends(Permission(Action.TRAIN))]


def job_public(job: jobs.JobView) -> JobPublic:
    return JobPublic(**dataclasses.asdict(job))


@router.post("/snapshots", response_model=SnapshotPublic, status_code=status.HTTP_201_CREATED)
async def upload_snapshot(
    env: str,
    request: Request,
    principal: Trainer,
    ctx: ContextDep,
    x_mlgate_git_commit: Annotated[str | None, Header(pattern=r"^[0-9a-f]{7,64}$")] = None,
    x_mlgate_git_dirty: Annotated[bool, Header()] = False,
) -> SnapshotPublic:
    """The project's code as a gzipped tar (what `mlgate train` packs); stored once per digest."""
    data = await read_body(request, limit=MAX_SNAPSHOT_BYTES, what="the code snapshot")
    snapshot = await to_thread.run_sync(
        lambda: jobs.store_snapshot(
            ctx.db,
            ctx.settings,
            actor=principal.name,
            env=env,
            data=data,
            git_commit=x_mlgate_git_commit,
            git_dirty=x_mlgate_git_dirty,
        )
    )
    return SnapshotPublic(**dataclasses.asdict(snapshot))


@router.post("/jobs", response_model=JobPublic, status_code=status.HTTP_201_CREATED)
def create_job(env: str, body: JobCreate, principal: Trainer, ctx: ContextDep) -> JobPublic:
    job = jobs.submit_train(ctx.db, ctx.settings, actor=principal.name, env=env, snapshot_sha256=body.snapshot)
    return job_public(job)


@router.get("/jobs", response_model=JobsPublic)
def list_jobs(
    env: str,
    _: Reader,
    ctx: ContextDep,
    state: str | None = None,
    limit: int = Query(default=50, ge=1, le=1000),
) -> JobsPublic:
    data = [job_public(j) for j in jobs.list_jobs(ctx.db, env, state=state, limit=limit)]
    return JobsPublic(data=data, count=len(data))


@router.get("/jobs/{job_id}", response_model=JobPublic)
def show_job(env: str, job_id: RowId, _: Reader, ctx: ContextDep) -> JobPublic:
    return job_public(jobs.get(ctx.db, env, job_id))


@router.get("/jobs/{job_id}/logs", response_model=JobLog)
def job_logs(
    env: str,
    job_id: RowId,
    _: Reader,
    ctx: ContextDep,
    offset: Offset = 0,
    tail: int | None = Query(default=None, ge=1, le=10_000),
) -> JobLog:
    """Log text from a byte offset (ask again from `offset` until `finished`), or its last `tail` lines
    (and the offset to follow on from).

    `finished` means nothing more will come: the job had ended before this read began (so its process
    wrote its last byte before), and the read reached the end of the log.
    """
    job = jobs.get(ctx.db, env, job_id)
    ended = JobState(job.state).finished
    if tail is not None:
        text, size = jobs.log_tail(ctx.settings, job_id, tail)
        return JobLog(text=text, offset=size, state=job.state, finished=ended)
    text, next_offset, at_end = jobs.read_log(ctx.settings, job_id, offset=offset, final=ended)
    return JobLog(text=text, offset=next_offset, state=job.state, finished=ended and at_end)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(env: str, job_id: RowId, principal: Trainer, ctx: ContextDep) -> JobPublic:
    return job_public(jobs.cancel(ctx.db, actor=principal.name, env=env, job_id=job_id))
