"""Creates an environment's MLflow tracking + registry store and artifact root.

Creating a store runs MLflow's own migrations, seconds of work per store. A new SQLite store is the
same for every environment (the schema and the `Default` experiment under `SERVED_ARTIFACT_ROOT`), so
`create_store` can take a store it made a moment ago as a pattern and copy it (SQLite's backup API)
instead of migrating again: `mlgate init` migrates once, not once per environment.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from mlgate.config import Environment
from mlgate.errors import BackendError

# With --serve-artifacts, the tracking server hands clients `mlflow-artifacts:` URIs and stores the
# bytes under --artifacts-destination; experiments created before it must use the same scheme, or
# clients would write to the server's disk directly.
SERVED_ARTIFACT_ROOT = "mlflow-artifacts:/"
SQLITE = "sqlite:///"


def create_store(env: Environment, *, like: Environment | None = None) -> None:
    """Create the environment's MLflow schema (idempotent) and its artifact folder. `like`: an environment
    whose store `create_store` has just made; when both are SQLite files and this one does not exist yet,
    it is made as a copy of that one."""
    env.artifact_root.mkdir(parents=True, exist_ok=True)
    if env.tracking_store.startswith(SQLITE):
        target = Path(env.tracking_store.removeprefix(SQLITE))
        target.parent.mkdir(parents=True, exist_ok=True)
        if like is not None and like.tracking_store.startswith(SQLITE) and not target.exists():
            _copy_sqlite(Path(like.tracking_store.removeprefix(SQLITE)), target)
            return
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore(env.tracking_store, SERVED_ARTIFACT_ROOT)  # type: ignore[no-untyped-call]
        store.engine.dispose()
    except Exception as exc:
        raise BackendError(f"cannot create the MLflow store of '{env.name}' at {env.tracking_store}: {exc}") from exc


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database `source` at `target` (new), through a temporary file."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with closing(sqlite3.connect(source)) as origin, closing(sqlite3.connect(partial)) as copy:
            origin.backup(copy)
        partial.replace(target)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise BackendError(f"cannot copy the MLflow store {source} to {target}: {exc}") from exc
