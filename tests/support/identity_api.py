"""Helpers for the identity tests through HTTP: the admin's credentials, the error envelope, users and
their bindings as the API shows them, the audit log, and the API's times (always in UTC)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.support.project import Project, bearer


def admin(project: Project) -> dict[str, str]:
    return bearer(project.tokens["admin"])


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    return error


def create_user(api: httpx.Client, project: Project, **body: Any) -> httpx.Response:
    return api.post("/api/v1/users", json=body, headers=admin(project))


def whoami(api: httpx.Client, token: str) -> httpx.Response:
    return api.get("/api/v1/whoami", headers=bearer(token))


def bindings_of(api: httpx.Client, token: str) -> set[tuple[str, str]]:
    response = whoami(api, token)
    assert response.status_code == 200, response.text
    return {(b["role"], b["environment"]) for b in response.json()["bindings"]}


def audit_events(api: httpx.Client, project: Project) -> list[dict[str, Any]]:
    response = api.get("/api/v1/audit", params={"limit": 10_000}, headers=admin(project))
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


def parse_time(value: str) -> datetime:
    """A time from the API: always with its zone (UTC), whether just made or read back from the database."""
    at = datetime.fromisoformat(value)
    assert at.utcoffset() == timedelta(0), f"not a UTC time: {value!r}"
    return at
