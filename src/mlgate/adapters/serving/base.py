"""The serving backend's seam: keep one serving host per environment running, push it a spec, ask how it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from mlgate.config import Environment


@dataclass(frozen=True)
class HostStatus:
    environment: str
    url: str | None  # where the host answers scoring requests
    pid: int | None
    running: bool
    restarts: int
    started_at: str | None
    applied: Any = None  # the spec the host serves now (its models loaded and warmed up), if it answered


class ServingBackend(Protocol):
    name: str

    def ensure(self, env: Environment) -> tuple[HostStatus, bool]:
        """Adopt the environment's running host, or start one (restarting a dead one); waits until it
        answers. The flag says whether a new process was started (its deployments must be pushed)."""
        ...

    def push(self, env: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply a spec; returns once every model in it is loaded and warmed up. A spec the host refuses
        raises ValidationError with the host's message; an unreachable host raises BackendError."""
        ...

    def running(self, env: str) -> bool: ...

    def status(self, env: str) -> HostStatus: ...

    def url(self, env: str) -> str: ...

    def stats(self, env: str) -> dict[str, Any]:
        """The host's cumulative per-slot counters: {"latency_buckets_s": [...], "endpoints": {name: {slot:
        {"requests", "errors" (5xx), "latency_counts", "latency_sum_s"}}}}; diff two to get a window.
        An unreachable host raises BackendError."""
        ...
