"""The server itself: its health, its background workers, and the environments a caller can see."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Health(BaseModel):
    """Anyone may ask: whether the server and its tracking servers are up, nothing about where they run."""

    status: Literal["ok", "degraded"]


class WorkerPublic(BaseModel):
    """One background worker of the server: whether it runs and what its ticks have done since start."""

    name: str
    running: bool
    ticks: int
    failures: int
    last_error: str | None
    last_tick_seconds: float | None


class WorkersPublic(BaseModel):
    data: list[WorkerPublic]
    count: int


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
