"""The audit log's hash chain: events from the CLI are chained, and any edit of the stored log is found.

The end-to-end test runs one private server, makes events through the CLI, then tampers with the
control database directly (as someone with file access would) and expects `mlgate audit verify` to
fail naming the first broken event.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlgate.domain.audit import (
    GENESIS,
    ChainedEvent,
    canonical_time,
    event_hash,
    payload_digest,
    verify_chain,
)
from tests.support.project import LiveServer, Project, start_server, stop_server

COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "environment",
    "subject",
    "payload_digest",
    "prev_hash",
    "hash",
    "payload",
    "mac",
)
SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit_events"  # noqa: S608 (fixed column names)
INSERT = f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime on SQLite


# --- verify_chain, in memory ---------------------------------------------------------------------


def make_chain(length: int) -> list[ChainedEvent]:
    events: list[ChainedEvent] = []
    prev = GENESIS
    start = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    for seq in range(1, length + 1):
        fields: dict[str, Any] = {
            "seq": seq,
            "at": start + timedelta(minutes=seq, microseconds=seq),
            "actor": "admin" if seq % 2 else "lee",
            "action": "user.create",
            "environment": None if seq % 3 else "dev",
            "subject": f"user:u{seq}",
            "payload_digest": payload_digest({"n": seq}),
            "prev_hash": prev,
        }
        prev = event_hash(**fields)
        events.append(ChainedEvent(**fields, hash=prev))
    return events


def test_an_empty_chain_with_an_empty_head_verifies() -> None:
    result = verify_chain([], head_seq=0, head_hash=GENESIS)
    assert (result.ok, result.events, result.broken_seq, result.reason) == (True, 0, None, None)


def test_an_empty_chain_whose_head_says_otherwise_is_broken_at_the_first_event() -> None:
    result = verify_chain([], head_seq=1, head_hash="a" * 64)
    assert (result.ok, result.broken_seq) == (False, 1)


def test_a_valid_chain_verifies() -> None:
    events = make_chain(5)
    result = verify_chain(events, head_seq=5, head_hash=events[-1].hash)
    assert (result.ok, result.events, result.broken_seq) == (True, 5, None)


def test_naive_utc_times_from_sqlite_verify_like_aware_ones() -> None:
    events = make_chain(3)
    naive = [replace(e, at=e.at.astimezone(UTC).replace(tzinfo=None)) for e in events]
    assert verify_chain(naive, head_seq=3, head_hash=events[-1].hash).ok
    assert canonical_time(naive[0].at) == canonical_time(events[0].at)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("at", datetime(2025, 3, 1, 9, 2, 1, tzinfo=UTC)),
        ("actor", "mallory"),
        ("action", "user.delete"),
        ("environment", "production"),
        ("subject", "user:mallory"),
        ("payload_digest", payload_digest({"n": 0})),
        ("prev_hash", "b" * 64),
        ("hash", "c" * 64),
    ],
)
def test_changing_any_field_breaks_the_chain_at_that_event(field: str, value: Any) -> None:
    events = make_chain(4)
    events[1] = replace(events[1], **{field: value})
    result = verify_chain(events, head_seq=4, head_hash=events[-1].hash)
    assert (result.ok, result.broken_seq) == (False, 2)


# --- end to end: the CLI, a real server, and the control database on disk --------------------------


@dataclass
class ControlDb:
    """The control database, opened with plain sqlite3 next to the running server."""

    path: Path

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    def change(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            assert conn.execute(sql, params).rowcount == 1, sql

    def events(self) -> list[tuple[Any, ...]]:
        return self.query(SELECT + " ORDER BY seq")

    def event(self, seq: int) -> dict[str, Any]:
        rows = self.query(SELECT + " WHERE seq = ?", (seq,))
        return dict(zip(COLUMNS, rows[0], strict=True))

    def head(self) -> tuple[int, str]:
        seq, hash_ = self.query("SELECT seq, hash FROM audit_head WHERE id = 1")[0]
        return int(seq), str(hash_)

    def restore(self, events: list[tuple[Any, ...]], head: tuple[int, str]) -> None:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            conn.execute("DELETE FROM audit_events")
            conn.executemany(INSERT, events)
            conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", head)


def rehash(row: dict[str, Any], *, prev_hash: str | None = None) -> str:
    """What mlgate would compute for this row (its `at` read back as SQLAlchemy reads it: naive UTC)."""
    return event_hash(
        seq=row["seq"],
        at=datetime.strptime(row["at"], SQLITE_TIME),
        actor=row["actor"],
        action=row["action"],
        environment=row["environment"],
        subject=row["subject"],
        payload_digest=row["payload_digest"],
        prev_hash=row["prev_hash"] if prev_hash is None else prev_hash,
    )


@pytest.fixture
def server(project: Project) -> Iterator[LiveServer]:
    running = start_server(project)
    yield running
    stop_server(running)


def cli(server: LiveServer, *args: str, who: str = "admin") -> Any:
    result = server.project.run(*args, token=server.project.tokens[who], url=server.url)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result


def test_audit_chain_through_the_cli_and_tampering_with_the_database(
    server: LiveServer, subtests: pytest.Subtests
) -> None:
    db = ControlDb(server.project.settings.home / "control.db")
    before = json.loads(cli(server, "audit", "verify", "--json").stdout)
    assert before["ok"] is True
    base = before["events"]
    assert base == len(db.events()) == db.head()[0] > 0  # init and the team's accounts

    # Events from two actors, through the CLI.
    created = cli(server, "user", "create", "chain-ann", "--role", "data-scientist", "--env", "dev")
    assert re.search(r"mlg_\S+", created.stdout)
    issued = json.loads(cli(server, "token", "create", "--user", "chain-ann", "--name", "ci", "--json").stdout)
    cli(server, "token", "revoke", str(issued["id"]))
    cli(server, "user", "grant", "chain-ann", "--role", "viewer", "--env", "staging")
    cli(server, "token", "create", "--name", "own", who="dana")
    last = base + 5

    verified = cli(server, "audit", "verify")
    assert verified.stdout.startswith(f"OK: {last} events, chain intact, MACs hold"), verified.stdout

    listed = json.loads(cli(server, "audit", "list", "--limit", "5", "--json").stdout)
    assert [(e["seq"], e["actor"], e["action"], e["subject"]) for e in listed] == [
        (last, "dana", "token.create", "user:dana"),
        (last - 1, "admin", "user.grant", "user:chain-ann"),
        (last - 2, "admin", "token.revoke", "user:chain-ann"),
        (last - 3, "admin", "token.create", "user:chain-ann"),
        (last - 4, "admin", "user.create", "user:chain-ann"),
    ]
    table = cli(server, "audit", "list").stdout
    for seq, actor, action in [(last, "dana", "token.create"), (last - 4, "admin", "user.create")]:
        assert re.search(rf"│ {seq}\s+│ \S[^│]*│ {actor}\s+│ {action}\s+│", table), table
    only_dana = json.loads(cli(server, "audit", "list", "--actor", "dana", "--json").stdout)
    assert only_dana[0]["seq"] == last and {e["actor"] for e in only_dana} == {"dana"}  # her own tokens

    # Now the tampering, each case on the original log, restored afterwards.
    original, head = db.events(), db.head()
    assert head == (last, original[-1][8])
    middle = base + 2
    row = db.event(middle)
    later = datetime.strptime(row["at"], SQLITE_TIME) + timedelta(seconds=1)
    forged = db.event(last) | {"seq": last + 1, "actor": "mallory", "prev_hash": head[1]}
    forged["hash"] = rehash(forged)
    rewritten = row | {"actor": "mallory"}

    update = "UPDATE audit_events SET {} = ? WHERE seq = ?"
    cases: list[tuple[str, Callable[[], None], int]] = [
        ("at", lambda: db.change(update.format("at"), (later.strftime(SQLITE_TIME), middle)), middle),
        ("actor", lambda: db.change(update.format("actor"), ("mallory", middle)), middle),
        ("action", lambda: db.change(update.format("action"), ("user.delete", middle)), middle),
        ("environment", lambda: db.change(update.format("environment"), ("production", middle)), middle),
        ("subject", lambda: db.change(update.format("subject"), ("user:mallory", middle)), middle),
        (
            "payload_digest",
            lambda: db.change(update.format("payload_digest"), (payload_digest({"forged": 1}), middle)),
            middle,
        ),
        ("prev_hash", lambda: db.change(update.format("prev_hash"), (original[0][8], middle)), middle),
        (
            "hash",
            lambda: db.change(update.format("hash"), (hashlib.sha256(b"x").hexdigest(), middle)),
            middle,
        ),
        (
            "delete a middle event",
            lambda: db.change("DELETE FROM audit_events WHERE seq = ?", (middle,)),
            middle,
        ),
        ("delete the last event", lambda: db.change("DELETE FROM audit_events WHERE seq = ?", (last,)), last),
        (
            "insert a forged, well-linked event",
            lambda: db.change(INSERT, tuple(forged[c] for c in COLUMNS)),
            last + 1,
        ),
        (
            "rewrite a middle event and its own hash",
            lambda: db.change(
                "UPDATE audit_events SET actor = ?, hash = ? WHERE seq = ?",
                ("mallory", rehash(rewritten), middle),
            ),
            middle,  # found by its MAC
        ),
        (
            "rewrite the last event and its own hash",
            lambda: db.change(
                "UPDATE audit_events SET actor = ?, hash = ? WHERE seq = ?",
                ("mallory", rehash(db.event(last) | {"actor": "mallory"}), last),
            ),
            last,  # found by its MAC
        ),
    ]
    for name, tamper, broken in cases:
        with subtests.test(msg=name):
            tamper()
            try:
                assert db.events() != original
                result = server.project.run("audit", "verify", token=server.project.tokens["admin"], url=server.url)
                assert result.returncode == 1, result.stdout
                assert re.match(rf"BROKEN at event {broken}: \S", result.stderr), result.stderr
                assert "OK" not in result.stdout
            finally:
                db.restore(original, head)
                assert (db.events(), db.head()) == (original, head)

    with subtests.test(msg="--json reports the break too"):
        db.change(update.format("actor"), ("mallory", middle))
        try:
            result = server.project.run(
                "audit", "verify", "--json", token=server.project.tokens["admin"], url=server.url
            )
            assert result.returncode == 1
            report = json.loads(result.stdout)
            assert (report["ok"], report["broken_seq"]) == (False, middle)
        finally:
            db.restore(original, head)

    # Restored, the log verifies again: every failure above was the tampering's.
    assert cli(server, "audit", "verify").stdout.startswith(f"OK: {last} events, chain intact, MACs hold")


def test_audit_verify_needs_the_admin_role(live_server: LiveServer) -> None:
    for who in ("lee", "olu"):
        result = live_server.project.run("audit", "verify", token=live_server.project.tokens[who], url=live_server.url)
        assert result.returncode == 1
        assert result.stderr.startswith(f"error (403 forbidden): {who} may not do this")
        assert "OK" not in result.stdout and "BROKEN" not in result.stdout + result.stderr
