"""Endpoints, their deployments and traffic, their keys, and the rollouts that change them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlgate.domain.limits import MAX_ROW_ID
from mlgate.interfaces.api.schemas.base import StrictBody, UtcDatetime


class EndpointCreate(StrictBody):
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


class DeploymentCreate(StrictBody):
    model: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1, le=MAX_ROW_ID)
    slot: str = Field(min_length=1, max_length=16)
    traffic: int | None = Field(default=None, ge=0, le=100)
    mirror: float | int | None = Field(default=None, ge=0, le=50)


class MirrorBody(StrictBody):
    slot: str
    percent: float | int = Field(ge=0, le=50)


class TrafficUpdate(StrictBody):
    weights: dict[str, int]
    mirror: MirrorBody | None = None
    clear_mirror: bool = False


class KeyRotated(BaseModel):
    endpoint: str
    environment: str
    which: str
    key: str  # shown once
    prefix: str


class RolloutStepPublic(BaseModel):
    traffic: int
    started_at: str | None = None
    ended_at: str | None = None
    requests: int | None = None
    errors: int | None = None
    error_rate: float | None = None
    p95_ms: float | None = None
    # The new slot's answers against the stable slot's on the shadowed share of the requests.
    compared: int | None = None  # rows
    disagreed: int | None = None
    disagreement_rate: float | None = None  # None: nothing compared
    prediction_drift: float | None = None  # PSI; None: not measured
    shadow_failed: int | None = None  # rows the other slot could not score
    shadow_dropped: int | None = None  # requests not shadowed: the host's shadow queue was full
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
