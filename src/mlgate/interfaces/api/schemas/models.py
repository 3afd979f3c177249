"""Model versions and their promotion chain, the promotion requests they go through, and their checks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlgate.interfaces.api.schemas.base import StrictBody, UtcDatetime


class ModelRegister(StrictBody):
    """A logged model to register: by run and logged model name, or by its models:/m-... URI."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="the registered model's name")
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    model: str = Field(default="model", min_length=1, max_length=256, description="the logged model's name")
    model_uri: str | None = Field(default=None, pattern=r"^models:/m-[0-9a-f]{8,64}$")
    data: str | None = Field(default=None, max_length=80, description="training data, NAME or NAME@VERSION")
    label: str | None = Field(default=None, min_length=1, max_length=256, description="the label column")


class ModelVersionSummary(BaseModel):
    environment: str
    name: str
    version: int
    digest: str
    run_id: str | None
    model_uri: str
    has_profile: bool
    created_by: str
    created_at: UtcDatetime


class ModelVersionDeleted(BaseModel):
    """A development version deleted through mlgate: gone from MLflow, its record kept (never renumbered)."""

    environment: str
    name: str
    version: int
    digest: str
    created_by: str
    deleted_by: str
    deleted_at: UtcDatetime


class ModelVersionsPublic(BaseModel):
    data: list[ModelVersionSummary]
    count: int


class ModelVersionLink(BaseModel):
    """One version of a promotion chain: the one registered in development, or a copy of it."""

    environment: str
    name: str
    version: int
    digest: str
    request_id: int | None = Field(description="the promotion request that made this copy; null for the original")
    created_at: UtcDatetime


class ModelVersionPublic(BaseModel):
    environment: str
    name: str
    version: int
    digest: str
    run_id: str | None
    model_uri: str
    signature: dict[str, Any]
    input_example: Any
    lineage: dict[str, Any]
    profile: dict[str, Any] | None
    card: str
    notes: list[str]
    created_by: str
    created_at: UtcDatetime
    chain: list[ModelVersionLink] = Field(
        default_factory=list,
        description="where this version came from and went, in promotion order (environments the caller reads)",
    )


class ModelRegistered(ModelVersionPublic):
    created: bool = Field(description="false: this logged model already had this version, which is returned")
    request_id: int | None = Field(default=None, description="the promotion request opened for it, if any")


class RequestCreate(StrictBody):
    name: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1, le=2**31 - 1)
    to: str | None = Field(default=None, description="target environment (default: the next one)")


class Verdict(StrictBody):
    comment: str | None = Field(default=None, max_length=10_000)


class DecisionPublic(BaseModel):
    actor: str
    decision: str
    comment: str | None
    at: UtcDatetime


class AuthorPublic(BaseModel):
    name: str
    # what they did: created the run, logged the model, requested the training job, registered it, ...
    as_: list[str] = Field(alias="as")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class RequestPublic(BaseModel):
    id: int
    gate: str
    model_name: str
    source_env: str
    source_version: int
    target_env: str
    state: str
    requested_by: str
    author: str
    authors: list[AuthorPublic]  # everyone who made the model: none of them decides its requests
    approver_role: str
    required_approvals: int
    required_checks: list[str]
    evidence: dict[str, Any]
    decisions: list[DecisionPublic]
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    decided_at: UtcDatetime | None
    target_version: int | None
    failure: str | None


class RequestsPublic(BaseModel):
    data: list[RequestPublic]
    count: int


class RequestLocation(BaseModel):
    id: int
    source_env: str
    target_env: str


class ChecksCreate(BaseModel):
    only: list[str] | None = None  # check names; None: every configured check


class CheckPublic(BaseModel):
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
    started_at: UtcDatetime
    finished_at: UtcDatetime | None


class ChecksPublic(BaseModel):
    data: list[CheckPublic]
    count: int
