"""Creates an environment's MLflow tracking + registry store and artifact root."""

from __future__ import annotations

from pathlib import Path

from mlgate.config import Environment
from mlgate.errors import BackendError

# With --serve-artifacts, the tracking server hands clients `mlflow-artifacts:` URIs and stores the
# bytes under --artifacts-destination; experiments created before it must use the same scheme, or
# clients would write to the server's disk directly.
SERVED_ARTIFACT_ROOT = "mlflow-artifacts:/"


def create_store(env: Environment) -> None:
    """Create the environment's MLflow schema (idempotent) and its artifact folder."""
    env.artifact_root.mkdir(parents=True, exist_ok=True)
    if env.tracking_store.startswith("sqlite:///"):
        Path(env.tracking_store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore(env.tracking_store, SERVED_ARTIFACT_ROOT)  # type: ignore[no-untyped-call]
        store.engine.dispose()
    except Exception as exc:
        raise BackendError(f"cannot create the MLflow store of '{env.name}' at {env.tracking_store}: {exc}") from exc
