"""Engines and sessions for the control database, SQLite (WAL) or PostgreSQL by URL.

SQLite: WAL so readers never block the writer, a busy timeout so writers queue instead of failing,
and `BEGIN IMMEDIATE` for write transactions, so a read-then-write step (an approval counting the
approvals before it) takes the write lock before it reads and two of them cannot interleave.

PostgreSQL: the same guarantee from a transaction-scoped advisory lock that every write transaction
takes first (READ COMMITTED alone would let two read-then-write steps read the same state).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mlgate.errors import BackendError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The advisory lock key write transactions serialize on, per database ("mlgate" in ASCII).
POSTGRES_WRITE_LOCK_KEY = 0x6D6C67617465
PRIVATE_FILE_MODE = 0o600  # the control database is the server's alone (see `mlgate.private_home`)


def _private_sqlite_file(url: str) -> None:
    """Create the database file 0600 before SQLite does, whatever the umask: its WAL and shared-memory
    files take the database file's mode."""
    path = make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:") and os.path.isdir(os.path.dirname(path) or "."):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE))


def _sqlite_engine(url: str) -> Engine:
    _private_sqlite_file(url)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself, with the mode we want.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("mlgate_write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _postgres_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Released by the transaction's commit or rollback; read transactions do not take it.
        if connection.get_execution_options().get("mlgate_write"):
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({POSTGRES_WRITE_LOCK_KEY})")

    return engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    if url.startswith("postgresql"):
        return _postgres_engine(url)
    return create_engine(url, pool_pre_ping=True)


def _unavailable(exc: OperationalError) -> BackendError:
    # The driver's message (table names, file paths) goes to the server log, not to API callers.
    log.error("control database error: %s", exc.orig)
    return BackendError("the control database is unavailable; see the server log")


AUDIT_MAC_KEY = "audit_mac_key"


class Database:
    """The control database: `read()` and `write()` sessions, each one transaction."""

    def __init__(self, url: str, *, audit_mac_key: bytes | None = None) -> None:
        """`audit_mac_key`: the key each audit event is authenticated with (`services.audit_keys`); write
        sessions carry it in `session.info` for `services.audit.record`."""
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        self.audit_mac_key = audit_mac_key
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(mlgate_write=True),
            expire_on_commit=False,
            info={AUDIT_MAC_KEY: audit_mac_key},
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            try:
                yield session
            except OperationalError as exc:
                raise _unavailable(exc) from exc

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed if the block ends normally, rolled back otherwise."""
        with self._writer() as session:
            try:
                with session.begin():
                    yield session
            except OperationalError as exc:
                raise _unavailable(exc) from exc

    def dispose(self) -> None:
        self.engine.dispose()
