"""A stand-in for the tracking servers, for tests of the API that do not need MLflow behind the door."""

from __future__ import annotations

from collections.abc import Callable

from mlgate.config import Settings


class FakeTrackingServers:
    """Reports every environment ready at a fixed upstream address; starts and stops nothing."""

    def __init__(self, environments: list[str], upstream: str = "http://127.0.0.1:9") -> None:
        self._environments = environments
        self._upstream = upstream
        self.started = False

    @classmethod
    def from_settings(cls, settings: Settings) -> FakeTrackingServers:
        return cls(settings.env_names)

    def start(self, on_spawn: Callable[[], None] | None = None) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def upstream(self, env: str) -> str:
        return self._upstream

    def ready_upstream(self, env: str) -> str | None:
        return self._upstream

    def status(self) -> dict[str, dict[str, object]]:
        return {env: {"pid": None, "port": None, "ready": self.started, "restarts": 0} for env in self._environments}
