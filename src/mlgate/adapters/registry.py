"""The backend registry: every implementation of every seam, by name, chosen from the config.

Each seam's interface is the `Protocol` in its adapter's `base.py`; the implementations sit side by side
in that adapter (`local.py` beside `fake.py`, and the scale-out ones beside them). This table is the one
place that names them: the config's choices are validated against it, and `build` imports only the
implementation chosen, so a heavy SDK is imported by the backend that needs it, with an install hint
when it is missing. Each implementation class has a `from_settings(settings)` constructor.

| seam      | config key          | default |
|-----------|---------------------|---------|
| execution | `execution.backend` | local   |
| serving   | `serving.backend`   | local   |
| tracking  | `tracking.backend`  | local   |
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlgate.errors import ConfigError

if TYPE_CHECKING:
    from mlgate.adapters.execution.base import ExecutionBackend
    from mlgate.adapters.mlflow.base import TrackingServers
    from mlgate.adapters.serving.base import ServingBackend
    from mlgate.config import Settings

Seam = Literal["execution", "serving", "tracking"]


@dataclass(frozen=True)
class Backend:
    seam: Seam
    name: str
    target: str  # "module:Class"; the class has `from_settings(settings)`
    summary: str
    install: str = ""  # the pip requirement that brings its SDK, when it needs one beyond mlgate's own


BACKENDS: tuple[Backend, ...] = (
    Backend("execution", "local", "mlgate.adapters.execution.local:LocalBackend", "sandboxed subprocesses"),
    Backend("execution", "fake", "mlgate.adapters.execution.fake:FakeBackend", "in memory; jobs end when told"),
    Backend("serving", "local", "mlgate.adapters.serving.local:LocalServingBackend", "one host per environment"),
    Backend("serving", "fake", "mlgate.adapters.serving.fake:FakeServingBackend", "in memory; serves nothing"),
    Backend(
        "tracking",
        "local",
        "mlgate.adapters.mlflow.tracking_servers:LocalTrackingServers",
        "an MLflow server per environment on a Unix socket",
    ),
    Backend("tracking", "fake", "mlgate.adapters.mlflow.fake:FakeTrackingServers", "answers nothing"),
)


def names(seam: Seam) -> list[str]:
    return [b.name for b in BACKENDS if b.seam == seam]


def check_name(seam: Seam, name: str) -> str:
    """`name` if `seam` has such a backend; otherwise a ConfigError that lists the known ones."""
    if name not in names(seam):
        raise ConfigError(
            f"{seam}.backend: unknown backend '{name}'; expected one of: {', '.join(names(seam))}",
            details={"seam": seam, "backend": name, "known": names(seam)},
        )
    return name


def _load(seam: Seam, name: str) -> Any:
    check_name(seam, name)
    entry = next(b for b in BACKENDS if b.seam == seam and b.name == name)
    module_name, _, attribute = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install '{entry.install}'" if entry.install else ""
        raise ConfigError(
            f"the {seam} backend '{name}' cannot be loaded: {exc}{hint}",
            details={"seam": seam, "backend": name},
        ) from exc
    return getattr(module, attribute)


def execution_backend(settings: Settings) -> ExecutionBackend:
    backend: ExecutionBackend = _load("execution", settings.execution.backend).from_settings(settings)
    return backend


def serving_backend(settings: Settings) -> ServingBackend:
    backend: ServingBackend = _load("serving", settings.serving.backend).from_settings(settings)
    return backend


def tracking_servers(settings: Settings) -> TrackingServers:
    servers: TrackingServers = _load("tracking", settings.raw.tracking.backend).from_settings(settings)
    return servers
