"""When the audit log's head is checkpointed: every N events, or after M minutes with any event in
between, and never twice for one head (`audit.checkpoint_every_events`, `checkpoint_every_minutes`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from mlgate.config import load_settings
from mlgate.services import audit, audit_integrity, audit_keys
from tests.support.project import Project

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_a_checkpoint_is_taken_every_n_events_or_every_m_minutes_and_only_when_the_head_moved(
    project: Project,
) -> None:
    data = yaml.safe_load(project.config.read_text())
    data["audit"] = {"checkpoint_every_events": 3, "checkpoint_every_minutes": 10}
    project.config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = load_settings(project.config)
    keys = audit_keys.load_or_create(settings.home)
    db = project.db()

    def record(count: int) -> None:
        with db.write() as session:
            for i in range(count):
                audit.record(session, actor="admin", action="test.event", payload={"i": i})

    def take(minutes: float) -> str:
        outcome = audit_integrity.take_checkpoint(db, settings, keys, now=T0 + timedelta(minutes=minutes))
        return f"at {outcome.checkpoint.seq}" if outcome.checkpoint else outcome.reason

    try:
        first = take(0)  # the events the project was made with: no checkpoint yet, so one is due
        assert first.startswith("at "), first
        assert take(0.5).startswith("no event since the last checkpoint")
        record(2)
        assert take(1) == "no checkpoint due"  # 2 events, 1 minute
        record(1)
        head = int(first.removeprefix("at ")) + 3
        assert take(2) == f"at {head}"  # the third event since
        record(1)
        assert take(11) == "no checkpoint due"  # 9 minutes since the last one
        assert take(12) == f"at {head + 1}"  # 10 minutes since the last one, with an event between
        assert take(60).startswith("no event since the last checkpoint")
        assert [c.seq for c in audit_integrity.read_checkpoints(settings.audit_checkpoint_file)][-2:] == [
            head,
            head + 1,
        ]
    finally:
        db.dispose()
