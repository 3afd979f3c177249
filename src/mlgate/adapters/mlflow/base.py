"""The MLflow seams: what the control plane needs of each environment's tracking server and registry.

`TrackingServers` (where each environment's server answers; `tracking_servers.LocalTrackingServers`,
`fake.FakeTrackingServers`), `ModelRegistry` (an environment's registry as registration uses it;
`registry.MlflowRegistry`) and `VersionCopier` (a version copied into the next environment's registry;
`copy.MlflowVersionCopier`). Services depend on these Protocols, never on the implementations.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mlgate.adapters.mlflow.copy import CopiedVersion, CopySpec
from mlgate.adapters.mlflow.registry import LoggedModel, RunRecord


class TrackingServers(Protocol):
    """The seam the API uses: where each environment's tracking server answers."""

    def start(self, on_spawn: Callable[[], None] | None = None) -> None:
        """Get ready to start servers; `on_spawn` is called after each server (re)starts, so the caller
        can record the processes it must stop."""
        ...

    def stop(self) -> None: ...
    def upstream(self, env: str) -> str:
        """Where `env`'s tracking server answers; may block while it starts (call it off the event loop)."""
        ...

    def ready_upstream(self, env: str) -> str | None:
        """Where `env`'s tracking server answers if it is up now, without blocking; None otherwise."""
        ...

    def status(self) -> dict[str, dict[str, object]]:
        """Per environment: `started`, `pid`, `ready`, `restarts` (and, locally, the `socket` path). For the
        control plane's own use (process records, logs): the anonymous health route publishes none of it."""
        ...


class ModelRegistry(Protocol):
    """An environment's MLflow as registration uses it (`registry.MlflowRegistry`)."""

    def run(self, run_id: str) -> RunRecord: ...
    def logged_models_of(self, run: RunRecord) -> list[LoggedModel]: ...
    def logged_model(self, model_uri: str) -> LoggedModel: ...
    def download(self, model: LoggedModel, destination: Path) -> Path: ...
    def create_version(
        self, *, name: str, model: LoggedModel, run_id: str | None, tags: dict[str, str], description: str
    ) -> tuple[int, bool]: ...
    def delete_version(self, *, name: str, version: int, drop_model: bool) -> None: ...


class VersionCopier(Protocol):
    """Copies a version into its target registry (`copy.MlflowVersionCopier`)."""

    def promote(self, spec: CopySpec) -> CopiedVersion: ...
    def discard(self, copied: CopiedVersion) -> None: ...
