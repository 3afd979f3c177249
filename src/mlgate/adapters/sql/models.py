"""Tables of the control database. Alembic migrations create them; never `create_all`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    kind: Mapped[str] = mapped_column(String(16), default="human")  # human | system
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    bindings: Mapped[list[RoleBinding]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )


class RoleBinding(Base):
    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("user_id", "role", "environment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(32))  # an environment name, or "*" for all
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[User] = relationship(back_populates="bindings")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex; the token is never kept
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A job token: minted for one job, good only for the MLflow door of `scope`'s environment.
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    scope: Mapped[str | None] = mapped_column(String(64))
    # A job token's own role in `scope`'s environment, instead of its user's bindings (a job the server
    # starts on its own acts as `system`, which is bound nowhere).
    role: Mapped[str | None] = mapped_column(String(32))
    # Who created it: its holder, or someone else (an admin at user creation or a reset). Only a token
    # its holder created decides a gate. None: created before this was recorded, so not the holder's.
    issued_by: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(lazy="joined")


class EndedSession(Base):
    """A web session signed out: its cookie names a token that may still be valid, so it is refused here
    until the cookie would have expired anyway."""

    __tablename__ = "ended_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the session's CSRF token
    user: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    environment: Mapped[str | None] = mapped_column(String(32), index=True)
    subject: Mapped[str | None] = mapped_column(String(256))
    payload_digest: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The details `payload_digest` covers (None on events written before they were kept).
    payload: Mapped[Any] = mapped_column(JSON)
    # HMAC-SHA256 of `hash` under the audit key, which is kept outside the database.
    mac: Mapped[str | None] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the chain's last sequence number and hash, kept apart from the events."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class CodeSnapshot(Base):
    """A packed copy of a project's code, content-addressed: stored once per digest and environment."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("environment", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    files: Mapped[int] = mapped_column(Integer)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    command: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    data_versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    requested_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    timeout_s: Mapped[float] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(32))
    handle: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    snapshot: Mapped[CodeSnapshot | None] = relationship(lazy="joined")


class DataAsset(Base):
    """One version of a registered data asset: content-addressed files plus what they hold."""

    __tablename__ = "data_assets"
    __table_args__ = (UniqueConstraint("environment", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(1024))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """mlgate's record of a registered model version: digest, signature, lineage, profile, card."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("environment", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    model_uri: Mapped[str] = mapped_column(String(512))
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_example: Mapped[Any] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    card: Mapped[str] = mapped_column(Text)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A dev version deleted through mlgate: its record stays (the number is never given again)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_by: Mapped[str | None] = mapped_column(String(64))
    # Everyone who made the model (`services.registration.authors`); None on versions recorded before.
    authors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class MlflowCreation(Base):
    """Who created a run or a logged model through an environment's MLflow door, from the caller's token."""

    __tablename__ = "mlflow_creations"
    __table_args__ = (UniqueConstraint("environment", "kind", "object_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # run | logged-model
    object_id: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromotionRequest(Base):
    """One model version going through one gate, with the evidence its approvers see."""

    __tablename__ = "promotion_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gate: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    source_env: Mapped[str] = mapped_column(String(32))
    source_version: Mapped[int] = mapped_column(Integer)
    target_env: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(64))  # the first of `authors`
    authors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    required_approvals: Mapped[int] = mapped_column(Integer)
    approver_role: Mapped[str] = mapped_column(String(32))
    required_checks: Mapped[list[str]] = mapped_column(JSON)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    target_version: Mapped[int | None] = mapped_column(Integer)
    target_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    failure: Mapped[str | None] = mapped_column(Text)

    decisions: Mapped[list[Decision]] = relationship(
        back_populates="request", lazy="selectin", order_by="Decision.id", cascade="all, delete-orphan"
    )


class Decision(Base):
    """An approval or a rejection of a request by one person; one each."""

    __tablename__ = "request_decisions"
    __table_args__ = (UniqueConstraint("request_id", "actor"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("promotion_requests.id", ondelete="CASCADE"), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    comment: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    request: Mapped[PromotionRequest] = relationship(back_populates="decisions")


class CheckRecord(Base):
    """Evidence: one run of a named check on one model version. Only mlgate's check runner writes it."""

    __tablename__ = "check_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running | passed | failed | error
    summary: Mapped[str] = mapped_column(Text, default="")
    log_excerpt: Mapped[str] = mapped_column(Text, default="")
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Notification(Base):
    """The outbox: one message to one recipient on one channel, written with the change it announces,
    delivered (and retried) by the server's delivery worker. The rows are the delivery log."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook | inbox
    recipient: Mapped[str] = mapped_column(String(512))  # an email address, a webhook name, a user name
    request_id: Mapped[int | None] = mapped_column(ForeignKey("promotion_requests.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Endpoint(Base):
    """A stable scoring address in one environment. Its two keys are kept only as SHA-256."""

    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("environment", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    primary_key_hash: Mapped[str] = mapped_column(String(64))
    primary_key_prefix: Mapped[str] = mapped_column(String(16))
    secondary_key_hash: Mapped[str] = mapped_column(String(64))
    secondary_key_prefix: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(16))  # config | api
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EndpointRevision(Base):
    """One state of an endpoint's deployments: {slot: {model_version_id, name, version, digest, traffic}}
    and the mirror; the newest is live. Rollback writes a new revision copying the parent of the live one."""

    __tablename__ = "endpoint_revisions"
    __table_args__ = (UniqueConstraint("endpoint_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    slots: Mapped[dict[str, Any]] = mapped_column(JSON)
    mirror: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    parent_number: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))  # created | deploy | traffic | rollback
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Rollout(Base):
    """A version that passed the gate into an environment, rolled out to the endpoint the policy names for
    its model. `steps`: [{traffic, started_at, ended_at, requests, errors, error_rate, p95_ms, outcome}]."""

    __tablename__ = "rollouts"
    __table_args__ = (UniqueConstraint("environment", "endpoint", "model_version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32), index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("promotion_requests.id"))
    strategy: Mapped[str] = mapped_column(String(16))  # blue-green | canary
    # pending | deploying | shifting | baking | succeeded | failed | rolled-back
    state: Mapped[str] = mapped_column(String(16), index=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    from_slot: Mapped[str | None] = mapped_column(String(16))  # the slot serving before (None: first rollout)
    to_slot: Mapped[str | None] = mapped_column(String(16))
    previous_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Monitor(Base):
    """A monitor on an endpoint: its spec (signals, thresholds, window, schedule, action) and where its
    alert stands (the hysteresis counters), declared in the policy config or created through the API."""

    __tablename__ = "monitors"
    __table_args__ = (UniqueConstraint("environment", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    origin: Mapped[str] = mapped_column(String(16))  # config | api
    firing: Mapped[bool] = mapped_column(Boolean, default=False)
    breaching: Mapped[int] = mapped_column(Integer, default=0)
    clean: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_retrain_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MonitorResult(Base):
    """One evaluation of a monitor over one window: the values per signal (and per feature), the
    thresholds they broke, and the verdict (breach | clean | no-verdict)."""

    __tablename__ = "monitor_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(256))  # name:version serving in the window
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    breaches: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    verdict: Mapped[str] = mapped_column(String(16))


class MonitorAlert(Base):
    """An alert: opened after K breaching windows, resolved after K clean ones; with the retraining it
    started, when the monitor's action is `retrain`."""

    __tablename__ = "monitor_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"), index=True)
    environment: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # firing | resolved
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opened_result_id: Mapped[int | None] = mapped_column(ForeignKey("monitor_results.id"))
    resolved_result_id: Mapped[int | None] = mapped_column(ForeignKey("monitor_results.id"))
    breaches: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # retrain: none | submitted | registered | skipped | failed, with the job, data and candidate it made
    retrain_state: Mapped[str] = mapped_column(String(16), default="none")
    retrain_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    retrain_data: Mapped[str | None] = mapped_column(String(128))
    candidate_version: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("promotion_requests.id"))
    retrain_note: Mapped[str | None] = mapped_column(Text)
