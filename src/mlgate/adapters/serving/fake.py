"""An in-memory serving backend for tests of the control plane that need no host process."""

from __future__ import annotations

import copy
from typing import Any

from mlgate.adapters.serving.base import HostStatus
from mlgate.config import Environment, Settings
from mlgate.errors import NotFoundError, ValidationError


class FakeServingBackend:
    """Keeps the last pushed spec per environment; `refuse` makes the next pushes fail with that message."""

    name = "fake"

    @classmethod
    def from_settings(cls, settings: Settings) -> FakeServingBackend:
        return cls()

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {}
        self.pushes: list[tuple[str, dict[str, Any]]] = []
        self.started: set[str] = set()
        self.refuse: str | None = None
        self.host_stats: dict[str, dict[str, Any]] = {}  # what `stats` answers, per environment; tests set it

    def ensure(self, env: Environment) -> tuple[HostStatus, bool]:
        new = env.name not in self.started
        self.started.add(env.name)
        return self.status(env.name), new

    def push(self, env: str, spec: dict[str, Any]) -> dict[str, Any]:
        if self.refuse is not None:
            raise ValidationError(self.refuse)
        self.specs[env] = copy.deepcopy(spec)
        self.pushes.append((env, copy.deepcopy(spec)))
        return {"ready": True}

    def running(self, env: str) -> bool:
        return env in self.started

    def status(self, env: str) -> HostStatus:
        return HostStatus(
            environment=env,
            url=self.url(env) if env in self.started else None,  # as the local backend: no host, no URL
            pid=None,
            running=env in self.started,
            restarts=0,
            started_at=None,
            applied=self.specs.get(env),
        )

    def url(self, env: str) -> str:
        if env not in self.started:
            raise NotFoundError(f"the serving host of '{env}' is not running", details={"environment": env})
        return f"http://serving.invalid/{env}"

    def stats(self, env: str) -> dict[str, Any]:
        return copy.deepcopy(self.host_stats.get(env, {"latency_buckets_s": [], "endpoints": {}}))
