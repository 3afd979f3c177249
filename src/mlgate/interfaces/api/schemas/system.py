"""The server itself: its health, and the environments a caller can see."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Health(BaseModel):
    """Anyone may ask: whether the server and its tracking servers are up, nothing about where they run."""

    status: Literal["ok", "degraded"]


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
