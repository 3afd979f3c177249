"""Runs the control database's Alembic migrations, at `mlgate init` and at server start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import mlgate.migrations
from mlgate.adapters.sql.database import Database

SCRIPT_LOCATION = str(Path(mlgate.migrations.__file__).parent)


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database) -> bool:
    """Bring the schema to the newest revision; True if anything was applied.

    Runs as a write transaction, so two processes starting at once (a server and `mlgate init`)
    take turns: the second finds the schema current and does nothing.
    """
    head = head_revision()
    if current_revision(db) == head:
        return False
    config = _config()
    with db.engine.execution_options(mlgate_write=True).begin() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return False
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return True
