"""Request and response bodies of the REST API: one schema per direction, never ORM objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _as_utc(at: datetime) -> datetime:
    """Every stored time is UTC, but SQLite hands them back naive: say so, the same way every time."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _Body(BaseModel):
    # Strict: "30" is not a number and true is not a day count; say so rather than guess.
    model_config = ConfigDict(extra="forbid", strict=True)


class Health(BaseModel):
    """Anyone may ask: whether the server and its tracking servers are up, nothing about where they run."""

    status: Literal["ok", "degraded"]


class BindingPublic(BaseModel):
    role: str
    environment: str


class WhoAmI(BaseModel):
    name: str
    bindings: list[BindingPublic]


class EnvironmentPublic(BaseModel):
    name: str
    kind: str
    order: int
    tracking_uri: str
    artifact_root: str
    serving_address: str
    my_roles: list[str]


class EnvironmentsPublic(BaseModel):
    data: list[EnvironmentPublic]
    count: int


class UserCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    roles: list[str] = Field(min_length=1)
    environments: list[str] = Field(default_factory=list)
    email: str | None = Field(default=None, max_length=254)  # the column's width


class RolesChange(_Body):
    roles: list[str] = Field(min_length=1)
    environments: list[str] = Field(default_factory=list)


class UserPublic(BaseModel):
    name: str
    email: str | None
    kind: str
    created_at: UtcDatetime
    bindings: list[BindingPublic]


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class TokenCreate(_Body):
    name: str = Field(default="cli", min_length=1, max_length=64)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenPublic(BaseModel):
    id: int
    user: str
    name: str
    prefix: str
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


class TokenIssued(TokenPublic):
    token: str = Field(description="the token itself; shown this once and never stored")


class UserCreated(BaseModel):
    user: UserPublic
    token: TokenIssued


class AuditEventPublic(BaseModel):
    seq: int
    at: UtcDatetime
    actor: str
    action: str
    environment: str | None
    subject: str | None
    payload_digest: str
    hash: str


class AuditEventsPublic(BaseModel):
    data: list[AuditEventPublic]
    count: int


class AuditVerifyPublic(BaseModel):
    ok: bool
    events: int
    broken_seq: int | None
    reason: str | None


class SnapshotPublic(BaseModel):
    sha256: str
    size: int
    files: int
    git_commit: str | None
    git_dirty: bool
    created: bool


class JobCreate(_Body):
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


class ModelRegister(_Body):
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


class RequestCreate(_Body):
    name: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1, le=2**31 - 1)
    to: str | None = Field(default=None, description="target environment (default: the next one)")


class Verdict(_Body):
    comment: str | None = Field(default=None, max_length=10_000)


class DecisionPublic(BaseModel):
    actor: str
    decision: str
    comment: str | None
    at: UtcDatetime


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


class DeliveryPublic(BaseModel):
    """One row of the notification delivery log."""

    id: int
    delivery_id: str
    event: str
    channel: str
    recipient: str
    request_id: int | None
    state: str
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_error: str | None
    created_at: UtcDatetime
    sent_at: UtcDatetime | None
    text: str


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]
    count: int


class InboxItemPublic(BaseModel):
    id: int
    event: str
    request_id: int | None
    text: str
    links: dict[str, str]
    created_at: UtcDatetime
    read_at: UtcDatetime | None


class InboxPublic(BaseModel):
    data: list[InboxItemPublic]
    count: int
    unread: int


class EndpointCreate(_Body):
    name: str = Field(min_length=1, max_length=63)
    description: str = Field(default="", max_length=2000)


class SlotPublic(BaseModel):
    slot: str
    model: str
    version: int
    digest: str
    traffic: int
    mirror_percent: float
    ready: bool  # the host serves this version in this slot now: loaded and warmed up


class HostPublic(BaseModel):
    environment: str
    url: str | None
    pid: int | None
    running: bool
    restarts: int
    started_at: str | None


class EndpointPublic(BaseModel):
    environment: str
    name: str
    description: str
    origin: str
    created_by: str
    created_at: UtcDatetime
    key_prefixes: dict[str, str]
    revision: int | None
    updated_by: str | None
    updated_at: UtcDatetime | None
    can_roll_back: bool
    slots: list[SlotPublic]
    mirror: dict[str, Any] | None
    ready: bool
    url: str | None  # MLflow-compatible scoring
    v2_url: str | None  # Open Inference Protocol v2 inference
    host: HostPublic


class EndpointCreated(EndpointPublic):
    keys: dict[str, str]  # shown once


class EndpointsPublic(BaseModel):
    data: list[EndpointPublic]
    count: int


class DeploymentCreate(_Body):
    model: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1)
    slot: str = Field(min_length=1, max_length=16)
    traffic: int | None = Field(default=None, ge=0, le=100)
    mirror: float | int | None = Field(default=None, ge=0, le=50)


class MirrorBody(_Body):
    slot: str
    percent: float | int = Field(ge=0, le=50)


class TrafficUpdate(_Body):
    weights: dict[str, int]
    mirror: MirrorBody | None = None
    clear_mirror: bool = False


class KeyRotated(BaseModel):
    endpoint: str
    environment: str
    which: str
    key: str  # shown once
    prefix: str


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


class RolloutStepPublic(BaseModel):
    traffic: int
    started_at: str | None = None
    ended_at: str | None = None
    requests: int | None = None
    errors: int | None = None
    error_rate: float | None = None
    p95_ms: float | None = None
    outcome: str | None = None  # passed | breach | too-few-requests; None while it runs


class RolloutPublic(BaseModel):
    id: int
    environment: str
    endpoint: str
    model: str
    version: int
    request_id: int | None
    strategy: str
    state: str  # pending | deploying | shifting | baking | succeeded | failed | rolled-back
    steps: list[RolloutStepPublic]
    from_slot: str | None
    to_slot: str | None
    previous_version: int | None
    reason: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    finished_at: UtcDatetime | None


class RolloutsPublic(BaseModel):
    data: list[RolloutPublic]
    count: int


class MonitorResultPublic(BaseModel):
    id: int
    at: UtcDatetime
    window_start: UtcDatetime | None
    window_end: UtcDatetime
    rows: int
    model: str | None
    values: dict[str, Any]
    breaches: list[dict[str, Any]]
    verdict: str


class MonitorResultsPublic(BaseModel):
    data: list[MonitorResultPublic]
    count: int


class MonitorAlertPublic(BaseModel):
    id: int
    monitor: str
    environment: str
    state: str
    opened_at: UtcDatetime
    resolved_at: UtcDatetime | None
    breaches: list[dict[str, Any]]
    retrain_state: str
    retrain_job_id: int | None
    retrain_data: str | None
    candidate_version: int | None
    request_id: int | None
    retrain_note: str | None


class MonitorPublic(BaseModel):
    environment: str
    name: str
    endpoint: str
    origin: str
    spec: dict[str, Any]
    thresholds: dict[str, float | None]  # the effective ones: defaults with the monitor's overrides
    firing: bool
    breaching: int
    clean: int
    last_run_at: UtcDatetime | None
    last_retrain_at: UtcDatetime | None
    created_by: str
    created_at: UtcDatetime
    last: MonitorResultPublic | None = None
    alerts: list[MonitorAlertPublic] = Field(default_factory=list)


class MonitorsPublic(BaseModel):
    data: list[MonitorPublic]
    count: int


class MonitorRunPublic(BaseModel):
    result: MonitorResultPublic
    change: str | None  # fire | resolve
    alert: MonitorAlertPublic | None


class FeedbackCreate(_Body):
    request_ids: list[str] = Field(min_length=1)
    labels: list[float] = Field(min_length=1)


class FeedbackResult(BaseModel):
    accepted: int
    unknown: list[str]  # request ids the endpoint's log does not hold: nothing stored for them
