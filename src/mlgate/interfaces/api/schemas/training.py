"""Code snapshots, training jobs (state and log) and data assets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mlgate.interfaces.api.schemas.base import StrictBody, UtcDatetime


class SnapshotPublic(BaseModel):
    sha256: str
    size: int
    files: int
    git_commit: str | None
    git_dirty: bool
    created: bool


class JobCreate(StrictBody):
    snapshot: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of an uploaded code snapshot")
    kind: Literal["train"] = "train"


class JobPublic(BaseModel):
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
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    timeout_s: float
    exit_code: int | None
    error: str | None
    backend: str
    sandbox: str | None = Field(
        description="how the job ran: 'bwrap' (sandboxed) or 'none' (with the server's powers); null until it starts"
    )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class JobLog(BaseModel):
    text: str
    offset: int
    state: str
    finished: bool


class DataAssetPublic(BaseModel):
    environment: str
    name: str
    version: int
    sha256: str
    format: str
    rows: int
    columns: list[dict[str, str]]
    files: list[dict[str, Any]]
    size: int
    source: str | None
    created_by: str
    created_at: UtcDatetime


class DataAssetsPublic(BaseModel):
    data: list[DataAssetPublic]
    count: int
