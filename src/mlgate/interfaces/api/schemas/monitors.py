"""Monitors on endpoints, their results and alerts, and the ground truth sent back to them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlgate.interfaces.api.schemas.base import StrictBody, UtcDatetime


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


class FeedbackCreate(StrictBody):
    request_ids: list[str] = Field(min_length=1)
    labels: list[float] = Field(min_length=1)


class FeedbackResult(BaseModel):
    accepted: int
    unknown: list[str]  # request ids the endpoint's log does not hold: nothing stored for them
