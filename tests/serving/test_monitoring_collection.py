"""The serving host's record of what it scored, and the ground truth sent back to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from mlgate.adapters.monitoring.store import labelled, read_feedback, read_requests
from mlgate.serving import recording
from mlgate.serving.recording import COMPACT_EVERY, RequestLog
from tests.support.serving_host import COLUMNS, PRIMARY, Host, Models, models, patient_rows, spec

__all__ = ["models"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")


class MonitoredHost(Host):
    def __init__(self, state_dir: Path, monitoring_dir: Path) -> None:
        super().__init__(state_dir)
        self.monitoring_dir = monitoring_dir

    def start(self, *extra: str) -> None:
        super().start("--monitoring-dir", str(self.monitoring_dir), *extra)


@pytest.fixture(scope="module")
def host(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredHost]:
    root = tmp_path_factory.mktemp("monitored")
    running = MonitoredHost(root / "state", root / "monitoring")
    running.start()
    assert running.push(spec(models)).status_code == 200
    yield running
    running.kill()


def _feedback(host: Host, body: Any, key: str = PRIMARY) -> httpx.Response:
    return httpx.post(
        f"{host.url}/endpoints/diabetes/feedback", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _wait_rows(root: Path, count: int) -> Any:
    deadline = time.monotonic() + 10
    while True:
        table = read_requests(root, "diabetes")
        if table.num_rows >= count or time.monotonic() > deadline:
            return table
        time.sleep(0.2)


def _wait_for_id(root: Path, request_id: str) -> dict[str, Any]:
    """The recorded requests by id, once `request_id` is among them (rows are flushed each second)."""
    deadline = time.monotonic() + 10
    while True:
        recorded = {r["request_id"]: r for r in read_requests(root, "diabetes").to_pylist()}
        if request_id in recorded or time.monotonic() > deadline:
            return recorded
        time.sleep(0.2)


def test_scored_requests_are_recorded_with_inputs_outputs_and_ids(host: MonitoredHost, models: Models) -> None:
    _, rows = patient_rows(3)
    answers = [host.score({"dataframe_split": {"columns": COLUMNS, "data": rows}}) for _ in range(4)]
    bad = host.score({"dataframe_split": {"columns": COLUMNS[:-1], "data": [r[:-1] for r in rows]}})
    assert all(a.status_code == 200 for a in answers) and bad.status_code == 422
    ids = {a.headers["x-request-id"] for a in answers}

    table = _wait_rows(host.monitoring_dir, 13)
    recorded = table.to_pylist()
    mine = [r for r in recorded if r["request_id"] in ids]
    assert len(mine) == 12 and {r["row"] for r in mine} == {0, 1, 2}
    assert all(r["status"] == 200 and r["latency_ms"] > 0 and r["slot"] in ("blue", "green") for r in mine)
    first = next(r for r in mine if r["row"] == 0)
    assert [first[f"in:{c}"] for c in COLUMNS] == pytest.approx([float(v) for v in rows[0]])
    answer = next(a for a in answers if a.headers["x-request-id"] == first["request_id"])
    assert first["out:prediction"] == answer.json()["predictions"][0]
    digests = {"blue": models.blue_digest, "green": models.green_digest}
    assert all(r["digest"] == digests[r["slot"]] for r in mine)
    failed = [r for r in recorded if r["request_id"] == bad.headers["x-request-id"]]
    assert len(failed) == 1 and failed[0]["status"] == 422 and failed[0].get("in:Age") is None

    metrics = host.metrics().text
    assert 'mlgate_serving_monitoring_rows_total{outcome="written"}' in metrics


def test_ground_truth_is_joined_and_unknown_ids_are_reported(host: MonitoredHost) -> None:
    _, rows = patient_rows(1)
    ids = [
        host.score({"dataframe_split": {"columns": COLUMNS, "data": rows}}).headers["x-request-id"] for _ in range(3)
    ]
    reply = _feedback(host, {"feedback": [{"request_id": ids[0], "label": 1}, {"request_id": "nosuch-id", "label": 0}]})
    assert reply.status_code == 200 and reply.json() == {"accepted": 1, "unknown": ["nosuch-id"]}
    assert _feedback(host, {"request_ids": ids[1:], "labels": [0, 1.0]}).json() == {"accepted": 2, "unknown": []}
    assert _feedback(host, {"request_ids": [ids[0]], "labels": [0]}).json()["accepted"] == 1  # a correction
    _wait_rows(host.monitoring_dir, 1)
    time.sleep(1.5)  # the rows of the last requests are flushed each second
    joined = {r["request_id"]: r["label"] for r in labelled(host.monitoring_dir, "diabetes").to_pylist()}
    assert joined[ids[0]] == 0.0 and joined[ids[1]] == 0.0 and joined[ids[2]] == 1.0  # the latest label counts
    assert "nosuch-id" not in set(read_feedback(host.monitoring_dir, "diabetes")["request_id"].to_pylist())


def test_ground_truth_only_for_ids_the_host_issued_for_the_endpoint(host: MonitoredHost, models: Models) -> None:
    two = spec(models)
    two["endpoints"]["other"] = two["endpoints"]["diabetes"]  # the same keys: only the id tells them apart
    assert host.push(two).status_code == 200
    try:
        payload = {"dataframe_split": {"columns": COLUMNS, "data": patient_rows(1)[1]}}
        mine = host.score(payload, headers={"x-request-id": "clinic-visit-42"})
        issued = mine.headers["x-request-id"]
        assert issued != "clinic-visit-42" and mine.headers["x-client-request-id"] == "clinic-visit-42"
        auth = {"Authorization": f"Bearer {PRIMARY}"}
        elsewhere = httpx.post(f"{host.url}/endpoints/other/invocations", json=payload, headers=auth)
        other = elsewhere.headers["x-request-id"]
        assert "x-client-request-id" not in host.score(payload, headers={"x-request-id": "not an id"}).headers
        # the caller's own id and the other endpoint's are unknown here; the id the host issued is taken
        reply = _feedback(host, {"request_ids": ["clinic-visit-42", other, issued], "labels": [1, 1, 0]})
        assert reply.json() == {"accepted": 1, "unknown": sorted(["clinic-visit-42", other])}, reply.text
        assert _wait_for_id(host.monitoring_dir, issued)[issued]["client_request_id"] == "clinic-visit-42"
        assert "clinic-visit-42" not in set(read_feedback(host.monitoring_dir, "diabetes")["request_id"].to_pylist())
    finally:
        assert host.push(spec(models)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"feedback": [{"request_id": "a", "label": "yes"}]}, 422, "'label' must be a number"),
        ({"feedback": [{"label": 1}]}, 422, "'request_id'"),
        ({"request_ids": ["a", "b"], "labels": [1]}, 422, "as long as"),
        ({"labels": [1]}, 422, "send {'feedback'"),
        ({"feedback": []}, 422, "no feedback"),
    ],
)
def test_bad_feedback_is_refused_naming_the_problem(host: MonitoredHost, body: Any, status: int, fragment: str) -> None:
    reply = _feedback(host, body)
    assert reply.status_code == status and fragment in reply.json()["message"], reply.text


def test_feedback_needs_the_endpoint_key(host: MonitoredHost) -> None:
    assert _feedback(host, {"request_ids": ["a"], "labels": [1]}, key="wrong-key-0123456789").status_code == 401


def test_a_sample_rate_of_zero_records_nothing(host: MonitoredHost, models: Models) -> None:
    quiet = spec(models)
    quiet["endpoints"]["diabetes"]["sample_rate"] = 0
    assert host.push(quiet).status_code == 200
    try:
        _, rows = patient_rows(1)
        time.sleep(1.2)
        before = read_requests(host.monitoring_dir, "diabetes").num_rows
        for _ in range(5):
            assert host.score({"dataframe_split": {"columns": COLUMNS, "data": rows}}).status_code == 200
        time.sleep(1.5)
        assert read_requests(host.monitoring_dir, "diabetes").num_rows == before
    finally:
        assert host.push(spec(models)).status_code == 200


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, capacity_rows=10)  # not started: nothing drains the buffers
    stream = log.stream("e", "s", "d", 1, ("a", "b"))
    rows = np.zeros((4, 2))
    kept = [log.record(stream, f"r{i}", 200, 1.0, rows, np.zeros(4)) for i in range(5)]
    assert kept == [True, True, False, False, False]
    assert log.stats()["dropped_rows"] == 12 and log.stats()["dropped_requests"] == 3
    log.flush()
    assert read_requests(tmp_path, "e").num_rows == 8 and log.stats()["pending_rows"] == 0


def test_the_log_keeps_every_request_in_order_across_blocks_and_odd_ones(tmp_path: Path) -> None:
    """Enough requests for several compacted blocks, some with several rows, one whose input does not stack
    with the others, one whose model failed: every row is written once, in its request, in order."""
    log = RequestLog(tmp_path)  # not started: flushed by hand
    stream = log.stream("e", "blue", "d" * 64, 3, ("a", "b"))
    sizes = [1 + (i % 7 == 0) * 2 for i in range(2 * COMPACT_EVERY + 9)]  # every 7th request has 3 rows
    expected: list[tuple[str, str | None, int, float, float]] = []
    for i, n in enumerate(sizes):
        rows = np.array([[i, r] for r in range(n)], dtype=np.float64)
        client = f"c{i}" if i % 2 else None  # the caller's own id, when it sent one
        assert log.record(stream, f"q{i}", 200, 0.5, rows, rows[:, 0] * 10, client)
        expected += [(f"q{i}", client, r, float(i), float(i) * 10) for r in range(n)]
    wide = np.zeros((1, 3))  # an input of another signature: its outcome is written, not its input
    assert log.record(stream, "wide", 200, 0.5, wide, np.zeros(1))
    assert log.record(stream, "failed", 500, 0.5, np.ones((1, 2)), None, "c-failed")
    last = f"q{len(sizes) - 1}"
    assert log.recorded("e", ["q0", last, "failed", "never"]) == {"q0", last, "failed"}
    assert log.recorded("another-endpoint", ["q0", last, "failed"]) == set()
    log.flush()

    table = read_requests(tmp_path, "e").to_pylist()
    assert log.stats()["written_rows"] == len(table) == len(expected) + 2 and log.stats()["pending_rows"] == 0
    mine = [
        (r["request_id"], r["client_request_id"], r["row"], r["in:a"], r["out:prediction"])
        for r in table
        if r["request_id"][0] == "q"
    ]
    assert mine == expected
    assert all(r["version"] == 3 and r["slot"] == "blue" for r in table)
    assert [(r["status"], r["in:a"]) for r in table if r["request_id"] == "wide"] == [(200, None)]
    failed = next(r for r in table if r["request_id"] == "failed")
    assert failed["status"] == 500 and failed["out:prediction"] is None and failed["in:a"] == 1.0
    assert failed["client_request_id"] == "c-failed"


def test_a_flush_that_spans_midnight_writes_each_row_under_its_own_day_and_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    midnight = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
    log = RequestLog(tmp_path)
    blue, green = log.stream("e", "blue", "b" * 64, 1, ("a",)), log.stream("e", "green", "g" * 64, 2, ("a",))
    one = np.ones((1, 1))
    for stream, request_id, at in ((blue, "b1", -0.2), (green, "g1", -0.1), (blue, "b2", 0.1)):
        monkeypatch.setattr(recording.time, "time", lambda at=at: midnight + at)
        log.record(stream, request_id, 200, 1.0, one, np.zeros(1))
    monkeypatch.undo()
    log.flush()
    by_hour = {
        f"{hour.parent.name}/{hour.name}": sorted(pq.read_table(hour).column("request_id").to_pylist())
        for hour in sorted((tmp_path / "requests" / "e").glob("*/*"))
    }
    assert by_hour == {"2026-03-01/23": ["b1", "g1"], "2026-03-02/00": ["b2"]}  # blue's rows come first, then green's
