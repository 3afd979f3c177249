"""The control database on SQLite (a WAL file) and on a real PostgreSQL 15: migrations, services,
and concurrent writers (SQLite's BEGIN IMMEDIATE + busy timeout; PostgreSQL's row and advisory locks)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, inspect, select, text

from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import SQLITE_BUSY_TIMEOUT_MS, Database
from mlgate.adapters.sql.models import AuditEvent, AuditHead, Job, User, utcnow
from mlgate.domain.audit import GENESIS, VerifyResult
from mlgate.domain.permissions import Role
from mlgate.errors import AuthenticationError, ConflictError
from mlgate.services import audit, audit_integrity, telemetry
from mlgate.services.identity import accounts
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures, imported for pytest to find

TABLES = {"users", "role_bindings", "api_tokens", "audit_events", "audit_head"}
ENVIRONMENTS = ["dev", "staging", "production"]
MAC_KEY = b"k" * 32  # the audit MAC key the server keeps outside the database


def _verified(database: Database) -> VerifyResult:
    """The chain checked as `mlgate audit verify` checks it, against each event's MAC (no checkpoints)."""
    return audit_integrity.verify_events(database, MAC_KEY)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty control database on the backend under test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'control.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(empty_url: str) -> Iterator[Database]:
    """A migrated control database."""
    database = Database(empty_url, audit_mac_key=MAC_KEY)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'control.db'}", audit_mac_key=MAC_KEY)
    migrate.upgrade(database)
    yield database
    database.dispose()


def _alembic_config() -> Config:
    # As `migrate.upgrade` does it: the scripts from the package, run on a connection we hand over.
    config = Config()
    config.set_main_option("script_location", migrate.SCRIPT_LOCATION)
    return config


def _downgrade_to_base(database: Database) -> None:
    config = _alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")


def _tables(database: Database) -> set[str]:
    return set(inspect(database.engine).get_table_names())


def _head(database: Database) -> tuple[int, str]:
    with database.read() as session:
        head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        return head.seq, head.hash


def _seqs(database: Database) -> list[int]:
    with database.read() as session:
        return list(session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars())


def _run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run `work(i)` in `count` threads released together; re-raise the first error any of them hit."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer is still running after 60 s"
    if errors:
        raise errors[0]


# --- migrations ---------------------------------------------------------------------------------


def test_upgrade_brings_an_empty_database_to_head_and_downgrade_undoes_it(empty_url: str) -> None:
    database = Database(empty_url, audit_mac_key=MAC_KEY)
    try:
        head = migrate.head_revision()
        assert head is not None
        assert migrate.current_revision(database) is None
        assert not TABLES & _tables(database)

        assert migrate.upgrade(database) is True
        assert migrate.current_revision(database) == head
        assert _tables(database) >= TABLES
        assert migrate.upgrade(database) is False  # idempotent
        assert migrate.current_revision(database) == head

        with database.read() as session:
            users = session.execute(select(User.name, User.kind)).all()
            head_row = session.execute(select(AuditHead.id, AuditHead.seq, AuditHead.hash)).all()
        assert [tuple(u) for u in users] == [("system", "system")]
        assert [tuple(h) for h in head_row] == [(1, 0, GENESIS)]
        assert accounts.system_principal(database).is_system
        result = _verified(database)
        assert result.ok and result.events == 0

        _downgrade_to_base(database)
        assert migrate.current_revision(database) is None
        assert not TABLES & _tables(database)

        assert migrate.upgrade(database) is True
        assert migrate.current_revision(database) == head
        assert _tables(database) >= TABLES
        with database.read() as session:
            assert session.execute(select(func.count()).select_from(User)).scalar_one() == 1
    finally:
        database.dispose()


# --- the services on the backend ----------------------------------------------------------------


def test_create_user_authenticate_and_verify_the_audit_chain(db: Database) -> None:
    bindings = accounts.parse_bindings(["data-scientist"], ["dev", "staging"], ENVIRONMENTS)
    view, issued = accounts.create_user(db, actor="admin", name="dana", bindings=bindings, email="d@example.com")
    assert view.name == "dana"
    assert {(b.role, b.environment) for b in view.bindings} == {
        (Role.DATA_SCIENTIST, "dev"),
        (Role.DATA_SCIENTIST, "staging"),
    }

    principal = accounts.authenticate(db, issued.value)
    assert principal.name == "dana"
    assert not principal.is_system
    assert principal.token_id == issued.record.id
    assert set(principal.bindings) == {"dev", "staging"}
    assert principal.bindings["dev"] == frozenset({Role.DATA_SCIENTIST})

    admin_bindings = accounts.parse_bindings(["admin"], [], ENVIRONMENTS)
    accounts.create_user(db, actor="system", name="ada", bindings=admin_bindings)
    accounts.revoke_token(db, actor="admin", token_id=issued.record.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        accounts.authenticate(db, issued.value)

    result = _verified(db)
    assert result.ok, result
    assert result.events == 3
    assert _seqs(db) == [1, 2, 3]
    events = audit.list_events(db, where=audit.AuditFilter())
    assert [(e.seq, e.action, e.subject) for e in events] == [
        (3, "token.revoke", "user:dana"),
        (2, "user.create", "user:ada"),
        (1, "user.create", "user:dana"),
    ]
    # Times come back from either backend so that every hash can be recomputed.
    assert _head(db) == (3, events[0].hash)


def test_verify_detects_a_changed_event(db: Database) -> None:
    for i in range(3):
        with db.write() as session:
            audit.record(session, actor="admin", action="test.event", payload={"i": i})
    assert _verified(db).ok
    with db.write() as session:
        session.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2"))
    result = _verified(db)
    assert not result.ok
    assert result.broken_seq == 2


# --- concurrent writers -------------------------------------------------------------------------


def test_concurrent_appends_keep_the_chain_gapless(db: Database) -> None:
    threads, appends = 4, 15

    def append(worker: int) -> None:
        for i in range(appends):
            with db.write() as session:
                audit.record(session, actor=f"worker-{worker}", action="test.append", payload={"i": i})

    _run_threads(threads, append)

    total = threads * appends
    assert _seqs(db) == list(range(1, total + 1))
    result = _verified(db)
    assert result.ok, result
    assert result.events == total
    assert _head(db)[0] == total
    with db.read() as session:
        rows = session.execute(select(AuditEvent.actor, func.count()).group_by(AuditEvent.actor)).all()
    per_actor = {actor: count for actor, count in rows}
    assert per_actor == {f"worker-{w}": appends for w in range(threads)}


def test_read_then_write_steps_serialize(db: Database) -> None:
    """Each write reads state first (the count of events, the head row), waits, then writes from it.

    If two write transactions could interleave, both would read the same state: they would record
    the same `seen` count, and the second would reuse the first's sequence number.
    """
    writers = 3
    seen: list[int] = []

    def step(worker: int) -> None:
        with db.write() as session:
            count = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
            head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
            assert head.seq == count
            time.sleep(0.2)
            event = audit.record(session, actor=f"worker-{worker}", action="test.step", payload={"seen": count})
            assert event.seq == count + 1
            seen.append(count)

    _run_threads(writers, step)

    assert sorted(seen) == list(range(writers))
    assert _head(db)[0] == writers
    assert _seqs(db) == list(range(1, writers + 1))
    result = _verified(db)
    assert result.ok, result
    assert result.events == writers


def test_reads_do_not_wait_for_an_open_write(db: Database) -> None:
    """Write transactions queue behind each other; read transactions go on, seeing committed state."""
    seen: list[int] = []

    def read_head() -> None:
        seen.append(_head(db)[0])

    with db.write() as session:
        audit.record(session, actor="admin", action="test.pending")
        reader = threading.Thread(target=read_head)
        reader.start()
        reader.join(timeout=10)
        blocked = reader.is_alive()
    reader.join(timeout=30)
    assert not blocked, "a read waited for the open write transaction"
    assert seen == [0]  # the uncommitted event is not visible
    assert _head(db)[0] == 1


def test_concurrent_creates_of_one_user_make_one_user(db: Database) -> None:
    bindings = accounts.parse_bindings(["viewer"], ["dev"], ENVIRONMENTS)
    outcomes: list[str] = []

    def create(_: int) -> None:
        try:
            accounts.create_user(db, actor="admin", name="vic", bindings=bindings)
            outcomes.append("created")
        except ConflictError:
            outcomes.append("conflict")

    _run_threads(3, create)

    assert sorted(outcomes) == ["conflict", "conflict", "created"]
    assert [u.name for u in accounts.list_users(db)] == ["system", "vic"]
    result = _verified(db)
    assert result.ok and result.events == 1


# --- SQLite specifics ---------------------------------------------------------------------------


def test_sqlite_connections_use_wal_and_a_busy_timeout(sqlite_db: Database) -> None:
    with sqlite_db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_write_takes_the_write_lock_at_begin_and_reads_do_not(sqlite_db: Database) -> None:
    path = sqlite_db.engine.url.database
    assert path
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with sqlite_db.write() as session:
            # Nothing written yet, only read: BEGIN IMMEDIATE already holds the write lock.
            session.execute(select(AuditHead.seq)).scalar_one()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")

        with sqlite_db.read() as session:
            session.execute(select(AuditHead.seq)).scalar_one()
            # WAL: an open read transaction does not keep a writer out.
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE audit_head SET seq = seq WHERE id = 1")
            other.execute("COMMIT")
    finally:
        other.close()


def _job(state: str, started: datetime, seconds: float | None) -> Job:
    finished = started + timedelta(seconds=seconds) if seconds is not None else None
    return Job(
        environment="dev",
        kind="train",
        state=state,
        command="python train.py",
        spec={},
        requested_by="dana",
        timeout_s=9000.0,
        backend="local",
        started_at=started,
        finished_at=finished,
    )


def test_the_prometheus_figures_are_bucketed_in_either_database(db: Database) -> None:
    """`services.telemetry` sums and buckets durations in SQL, written per dialect: the same figures on both."""
    now = utcnow()
    started = now - timedelta(hours=3)
    with db.write() as session:
        session.add_all([_job("succeeded", started, 42.5), _job("failed", started, 7200.0)])
        session.add_all([_job("succeeded", started, 3.0), _job("running", now, None)])
    figures = telemetry.read(db, now=now)
    assert figures.jobs[("dev", "train", "succeeded")] == 2 and figures.jobs[("dev", "train", "queued")] == 0
    done = figures.job_durations.series[("dev", "train", "succeeded")]
    bounds = figures.job_durations.bounds
    assert done.count == 2 and done.total == pytest.approx(45.5, abs=0.01)
    assert [n for bound, n in zip(bounds, done.cumulative, strict=True) if bound in (1, 5, 30, 60)] == [0, 1, 1, 2]
    failed = figures.job_durations.series[("dev", "train", "failed")]
    assert failed.cumulative[bounds.index(3600.0)] == 0 and failed.cumulative[bounds.index(7200.0)] == 1
    assert ("dev", "train", "running") not in figures.job_durations.series  # not finished: no duration
