"""The replay of "what served at time T" from audit events alone: two rollouts and a rollback, asked
about before the first event, between each step and after the last."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlgate.domain.audit_history import AuditRecord, ServingAt, parse_moment, replay
from mlgate.errors import ValidationError

ENV = "production"
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _history() -> list[AuditRecord]:
    """Version 1 rolled out to blue; version 2 to green; then rolled back to blue. One event a minute."""
    rows: list[tuple[str, str, str, Any]] = [
        ("olu", "endpoint.create", "endpoint:web", {"endpoint": "web", "slots": []}),
        ("dana", "request.open", "request:1", {"model": "m", "version": 4, "from": "staging", "to": ENV}),
        ("sam", "request.approve", "request:1", {"comment": "good", "state": "approved"}),
        ("system", "model.promote", "model:m:1", {"request": 1}),
        ("system", "endpoint.deploy", "endpoint:web", {"endpoint": "web", "slots": [_slot("blue", 1, 100)]}),
        ("dana", "request.open", "request:2", {"model": "m", "version": 5, "from": "staging", "to": ENV}),
        ("sid", "request.approve", "request:2", {"comment": None, "state": "open"}),
        ("sam", "request.approve", "request:2", {"comment": None, "state": "approved"}),
        ("system", "model.promote", "model:m:2", {"request": 2}),
        ("system", "endpoint.deploy", "endpoint:web", {"endpoint": "web", "slots": _both(100, 0)}),
        ("system", "endpoint.traffic", "endpoint:web", {"endpoint": "web", "slots": _both(10, 90)}),
        ("system", "endpoint.traffic", "endpoint:web", {"endpoint": "web", "slots": _both(0, 100)}),
        ("olu", "endpoint.rollback", "endpoint:web", {"endpoint": "web", "slots": _both(100, 0)}),
    ]
    return [
        AuditRecord(seq, START + timedelta(minutes=seq), actor, action, ENV, subject, payload)
        for seq, (actor, action, subject, payload) in enumerate(rows, start=1)
    ]


def _slot(slot: str, version: int, weight: int) -> dict[str, Any]:
    return {"slot": slot, "model": "m", "version": version, "weight": weight}


def _both(blue: int, green: int) -> list[dict[str, Any]]:
    return [_slot("blue", 1, blue), _slot("green", 2, green)]


def _at(minutes: float) -> ServingAt:
    return replay(_history(), environment=ENV, at=START + timedelta(minutes=minutes), gate="B")


def _table(answer: ServingAt) -> list[tuple[str, int, int, list[str]]]:
    return [(s.slot, s.version, s.weight, s.approved_by) for s in answer.slots]


def test_before_the_first_event_and_before_any_deployment_nothing_served() -> None:
    assert _at(0).slots == [] and _at(0).last_seq is None and _at(0).endpoints == ()
    created = _at(1.5)
    assert [e.endpoint for e in created.endpoints] == ["web"] and created.slots == []


def test_each_moment_between_the_steps_shows_the_slot_table_then_in_force() -> None:
    assert _table(_at(5.5)) == [("blue", 1, 100, ["sam"])]
    assert _table(_at(10)) == [("blue", 1, 100, ["sam"]), ("green", 2, 0, ["sid", "sam"])]  # at T counts
    assert _table(_at(11.5)) == [("blue", 1, 10, ["sam"]), ("green", 2, 90, ["sid", "sam"])]
    assert _table(_at(12.5)) == [("blue", 1, 0, ["sam"]), ("green", 2, 100, ["sid", "sam"])]
    after = _at(60 * 24 * 365)  # long after the rollback, and in the future: what serves now
    assert _table(after) == [("blue", 1, 100, ["sam"]), ("green", 2, 0, ["sid", "sam"])]
    (web,) = after.endpoints
    assert (web.action, web.changed_by, web.seq) == ("endpoint.rollback", "olu", 13)
    approval = after.slots[0].approvals[0]
    assert (approval.gate, approval.request, approval.comment) == ("B", 1, "good")
    assert approval.at == START + timedelta(minutes=3)


def test_other_environments_and_events_without_a_slot_table_are_passed_over() -> None:
    events = _history()
    strays = [
        AuditRecord(14, START + timedelta(minutes=14), "olu", "endpoint.traffic", "staging", "endpoint:web", {}),
        AuditRecord(15, START + timedelta(minutes=15), "olu", "endpoint.traffic", ENV, "endpoint:web", None),
    ]
    answer = replay([*events, *strays], environment=ENV, at=START + timedelta(days=1))
    assert _table(answer) == [("blue", 1, 100, ["sam"]), ("green", 2, 0, ["sid", "sam"])]
    assert answer.slots[0].approvals[0].gate == f"staging -> {ENV}"  # no gate name given: the request's way


def test_times_are_iso_8601_naive_meaning_utc_and_anything_else_is_refused_by_name() -> None:
    assert parse_moment("2025-03-01T12:05:30") == datetime(2025, 3, 1, 12, 5, 30, tzinfo=UTC)
    assert parse_moment("2025-03-01T14:05:30+02:00") == datetime(2025, 3, 1, 12, 5, 30, tzinfo=UTC)
    assert parse_moment("2025-03-01T12:05:30Z") == datetime(2025, 3, 1, 12, 5, 30, tzinfo=UTC)
    naive = replay(_history(), environment=ENV, at=datetime(2025, 3, 1, 12, 5, 30), gate="B")
    assert _table(naive) == [("blue", 1, 100, ["sam"])]
    with pytest.raises(ValidationError, match="invalid time 'yesterday': expected an ISO 8601 time"):
        parse_moment("yesterday")
    for outside in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # no UTC time in years 1 to 9999
        with pytest.raises(ValidationError, match="expected an ISO 8601 time"):
            parse_moment(outside)
