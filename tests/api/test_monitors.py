"""Monitors: the alert hysteresis and schedules as pure units, the config section, and a real server whose
production endpoint `web` serves a version with a baseline profile, watched by a monitor declared in the
server's mlgate.yaml.

The world writes its production version's record, profile and reference sample, and the endpoint's live
allocation, straight into the server's control database and files (promotion and rollouts have their
own tests), and the scored traffic into the monitoring store with the serving host's own writer
(`RequestLog`), from the training distribution or shifted. Monitors are run through the CLI and the API.

The rows are written rather than scored because the version here is a record with no model behind it:
serving real traffic takes a trained model carried through both gates and rolled out (about 35 s more),
and these tests need exact control of what was answered (a known accuracy, latencies under the p95
threshold). tests/test_retraining.py runs monitors on real traffic through the serving host.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select

from mlgate.adapters.monitoring.store import read_requests
from mlgate.adapters.sql.models import ModelVersion, Notification, utcnow
from mlgate.config import parse_config
from mlgate.domain.alerts import Change, Hysteresis, replay, step
from mlgate.domain.endpoints import Allocation, SlotAllocation
from mlgate.domain.monitors import Cron, Schedule, Window
from mlgate.domain.profile import build_profile
from mlgate.domain.request_records import Hour, new_request_id, requests_folder
from mlgate.errors import ConfigError
from mlgate.interfaces.sdk.client import ApiError, Client
from mlgate.services.registration import models
from mlgate.services.release import endpoints
from mlgate.serving.recording import RequestLog
from mlgate.serving.request_tables import write_part
from tests.support.project import MLGATE, LiveServer, Project, start_server, stop_server
from tests.support.serving_world import clean_env

# -- the hysteresis, pure ------------------------------------------------------------------------------


def test_k_breaching_windows_fire_once_and_k_clean_ones_resolve() -> None:
    state, changes = replay([True, True, True, True], k=2)
    assert changes == [Change.FIRE] and state.firing
    state, changes = replay([False, True, False, False], k=2, start=state)  # one clean window is not enough
    assert changes == [Change.RESOLVE] and not state.firing


def test_alternating_windows_never_fire_and_windows_without_verdict_change_nothing() -> None:
    state, changes = replay([True, False] * 10, k=2)
    assert changes == [] and not state.firing
    state, changes = replay([True, None, None, True], k=2)  # quiet windows do not break the run
    assert changes == [Change.FIRE]
    assert step(Hysteresis(), None, k=1) == (Hysteresis(), None)
    assert replay([True], k=1)[1] == [Change.FIRE]
    with pytest.raises(ValueError):
        step(Hysteresis(), True, k=0)


def test_schedules_windows_and_cron() -> None:
    at = datetime(2025, 3, 3, 10, 15, tzinfo=UTC)  # a Monday
    every = Schedule.parse("5m")
    assert (
        every.due(None, at)
        and not every.due(at - timedelta(minutes=4), at)
        and every.due(at - timedelta(minutes=5), at)
    )
    cron = Schedule.parse("*/15 9-17 * * 1-5")
    assert cron.due(None, at) and not cron.due(None, at + timedelta(minutes=1))
    assert cron.due(at - timedelta(minutes=3), at) and not cron.due(at, at + timedelta(minutes=5))
    assert not Cron.parse("0 0 * * 0").matches(at) and Cron.parse("15 10 3 3 *").matches(at)
    assert Cron.parse("0 0 1 * 1").matches(at.replace(hour=0, minute=0))  # day or weekday, as cron does
    assert Window.parse("30m").duration == timedelta(minutes=30) and Window.parse("5000 rows").rows == 5000
    for bad in ("5", "61 * * * *", "* * *"):
        with pytest.raises(ValueError):
            Schedule.parse(bad)


def test_the_monitors_section_is_typed_and_errors_name_the_key() -> None:
    config = parse_config(
        "monitors:\n  - {name: web-drift, endpoint: web, signals: [data-drift], thresholds: {drift_share: 0.3},"
        " schedule: '*/5 * * * *', action: retrain, retrain: {data: diabetes-train, cooldown_hours: 6}}\n"
    )
    (monitor,) = config.monitors
    assert monitor.environment is None and monitor.consecutive == 2 and monitor.retrain.data == "diabetes-train"
    for text, expected in (
        ("monitors: [{name: a, endpoint: w, signals: [nope]}]", "monitors[0].signals[0]"),
        ("monitors: [{name: a, endpoint: w, thresholds: {psy: 1}}]", "unknown threshold(s) psy"),
        ("monitors: [{name: a, endpoint: w, window: 3q}]", "monitors[0].window"),
        ("monitors: [{name: a, endpoint: w, schedule: '* *'}]", "monitors[0].schedule"),
        ("monitors: [{name: a, endpoint: w, action: page}]", "monitors[0].action"),
    ):
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            parse_config(text)


# -- a real server -------------------------------------------------------------------------------------

ENV = "production"
FEATURES = ["age", "bmi", "glucose"]
K = 2
MIN_ROWS = 200
RETENTION_DAYS = 30
CONFIG = f"""
endpoints:
  production:
    - {{name: web, description: the clinic's web app}}
monitors:
  - name: web-watch
    endpoint: web
    signals: [data-drift, prediction-drift, data-quality, model-performance, endpoint-performance]
    thresholds: {{max_p95_ms: 1000}}
    window: 1h
    schedule: 1d
    min_rows: {MIN_ROWS}
    consecutive: {K}
monitoring:
  upkeep_interval_s: 0.5
  retention: {{max_age_days: {RETENTION_DAYS}}}
"""


def patients(rows: int, *, seed: int, drift: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shift = (15.0, 4.0, 30.0) if drift else (0.0, 0.0, 0.0)
    return np.column_stack(
        [
            rng.normal(45 + shift[0], 10, rows),
            rng.normal(30 + shift[1], 4, rows),
            rng.normal(105 + shift[2], 20, rows),
        ]
    )


def predict(x: np.ndarray) -> np.ndarray:
    return (x[:, 2] > 120).astype(np.float64)


class World:
    def __init__(self, project: Project, server: LiveServer) -> None:
        self.project, self.server = project, server
        self.settings = project.settings

    def client(self, user: str) -> Client:
        return Client(self.server.url, self.project.tokens[user])

    def cli(self, *args: str, user: str = "olu") -> subprocess.CompletedProcess[str]:
        env = clean_env(MLGATE_URL=self.server.url, MLGATE_TOKEN=self.project.tokens[user])
        return subprocess.run(
            [MLGATE, *args], cwd=self.project.path, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    def score(self, rows: np.ndarray, *, requests: int, seed: int) -> list[str]:
        """Traffic as the serving host logs it: `requests` calls sharing `rows`; their request ids."""
        log = RequestLog(self.settings.environment(ENV).monitoring_dir)
        stream = log.stream("web", "blue", "ab" * 32, 1, tuple(FEATURES))
        ids = []
        for chunk in np.array_split(rows, requests):
            request_id = new_request_id()
            log.record(stream, request_id, 200, 5.0, chunk, predict(chunk))
            ids.append(request_id)
        log.flush()
        return ids


def _serve_a_profiled_version(world: World) -> None:
    """Production's `diabetes` version 1 with its baseline (profile.json, sample.csv), live on `web`."""
    training = patients(5000, seed=0)
    labels = (training[:, 2] + np.random.default_rng(1).normal(0, 5, len(training)) > 120).astype(np.float64)
    profile = build_profile(
        data="diabetes-train@1",
        rows=len(training),
        features={name: training[:, i] for i, name in enumerate(FEATURES)},
        label=("outcome", labels),
        predictions={"prediction": predict(training)},
        sample={"file": "sample.csv", "rows": len(training), "seed": 0, "sha256": ""},
        notes=[],
    )
    folder = models.version_dir(world.settings, ENV, "diabetes", 1)
    folder.mkdir(parents=True)
    (folder / "profile.json").write_text(json.dumps(profile))
    with (folder / "sample.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*FEATURES, "outcome", "prediction"])
        writer.writerows([*x, y, p] for x, y, p in zip(training.tolist(), labels, predict(training), strict=True))
    db = world.project.db()
    try:
        with db.write() as session:
            record = ModelVersion(
                environment=ENV,
                name="diabetes",
                version=1,
                digest="ab" * 32,
                run_id=None,
                model_uri="models:/m-0123456789abcdef",
                signature={"inputs": [{"name": f, "type": "double"} for f in FEATURES]},
                input_example=None,
                lineage={},
                profile=profile,
                card="# diabetes 1",
                source_id=None,
                created_by="dana",
                created_at=utcnow(),
            )
            session.add(record)
            session.flush()
            record_id = record.id
        live = endpoints.get(db, ENV, "web")
        slot = SlotAllocation("blue", record_id, "diabetes", 1, "ab" * 32, 100)
        endpoints.record_revision(
            db, ENV, "web", Allocation((slot,)), actor="olu", reason="deploy", expected=live.revision
        )
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def world(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("monitors") / "project"
    project = project_template.copy(folder, config=CONFIG)
    server = start_server(project)
    built = World(project, server)
    try:
        _serve_a_profiled_version(built)
        yield built
    finally:
        stop_server(server)


def _alert_notifications(world: World) -> list[tuple[str, str, str]]:
    db = world.project.db()
    try:
        with db.read() as session:
            rows = session.execute(select(Notification).where(Notification.event.like("monitor.%"))).scalars()
            return [(r.event, r.recipient, r.channel) for r in rows]
    finally:
        db.dispose()


def test_the_declared_monitor_is_listed_and_the_routes_refuse_non_operators(world: World) -> None:
    listed = world.cli("monitor", "list", "--env", ENV, user="vic")
    assert listed.returncode == 0, listed.stderr
    assert "web-watch" in listed.stdout and "never" in listed.stdout
    with world.client("sam") as sam, pytest.raises(ApiError) as refused:
        sam.run_monitor(ENV, "web-watch")
    assert refused.value.status_code == 403 and "manage-monitors" in refused.value.message
    with world.client("olu") as olu:
        with pytest.raises(ApiError) as missing:
            olu.create_monitor(ENV, {"name": "other", "endpoint": "nowhere"})
        assert missing.value.status_code == 404 and "nowhere" in missing.value.message
        made = olu.create_monitor(ENV, {"name": "web-latency", "endpoint": "web", "signals": ["endpoint-performance"]})
        assert made["origin"] == "api" and made["thresholds"]["max_p95_ms"] == 250.0


def test_too_few_rows_give_no_verdict(world: World) -> None:
    world.score(patients(50, seed=2), requests=5, seed=2)
    ran = world.cli("monitor", "run", "web-watch", "--env", ENV)
    assert ran.returncode == 0, ran.stderr
    assert "no-verdict over 50 rows (diabetes:1)" in ran.stdout


def test_training_traffic_is_clean_and_drifted_traffic_fires_after_k_windows(world: World) -> None:
    world.score(patients(2000, seed=3), requests=40, seed=3)
    with world.client("olu") as olu:
        for _ in range(K + 1):
            outcome = olu.run_monitor(ENV, "web-watch")
            assert outcome["result"]["verdict"] == "clean", outcome["result"]["breaches"]
            assert outcome["change"] is None
        assert olu.monitor(ENV, "web-watch")["alerts"] == []
        assert _alert_notifications(world) == []

        # The population shifts: older, heavier, higher glucose. The window fills with it.
        world.score(patients(8000, seed=4, drift=True), requests=80, seed=4)
        first = olu.run_monitor(ENV, "web-watch")
        assert first["result"]["verdict"] == "breach" and first["change"] is None  # one window: not yet
        second = olu.run_monitor(ENV, "web-watch")
        assert second["change"] == "fire", second
        alert = second["alert"]
        assert alert["state"] == "firing"
        third = olu.run_monitor(ENV, "web-watch")
        assert third["change"] is None  # fired once, not again
        shown = olu.monitor(ENV, "web-watch")
    assert shown["firing"] and [a["id"] for a in shown["alerts"]] == [alert["id"]]
    sent = _alert_notifications(world)
    # To the environment's operator, and the model's author (dana: no role in production, still told).
    assert ("monitor.alert", "olu", "inbox") in sent and ("monitor.alert", "dana", "inbox") in sent

    status = world.cli("monitor", "status", "--env", ENV, user="vic")
    assert status.returncode == 0, status.stderr
    assert "web-watch on production/web: alert FIRING; last breach" in status.stdout
    assert "data-drift" in status.stdout and "BREACH" in status.stdout
    report = world.cli("monitor", "report", "web-watch", "--env", ENV, user="vic")
    assert report.returncode == 0, report.stderr
    for feature in FEATURES:
        assert feature in report.stdout
    assert "DRIFTED" in report.stdout and "verdict DRIFT" in report.stdout
    drift = shown["last"]["values"]["data-drift"]
    assert drift["dataset_drift"] and drift["features"]["glucose"]["drifted"]


def test_feedback_is_joined_to_requests_and_unknown_ids_are_reported(world: World, tmp_path: Path) -> None:
    rows = patients(400, seed=5)
    ids = world.score(rows, requests=400, seed=5)
    truth = predict(rows)
    truth[:100] = 1 - truth[:100]  # a quarter of the answers were wrong
    file = tmp_path / "truth.csv"
    with file.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["request_id", "label"])
        writer.writerows(zip(ids, truth.tolist(), strict=True))
        writer.writerow(["no-such-request", 1])
    refused = world.cli("monitor", "feedback", str(file), "--env", ENV, "--endpoint", "web", user="vic")
    assert refused.returncode == 1 and "manage-monitors" in refused.stderr
    sent = world.cli("monitor", "feedback", str(file), "--env", ENV, "--endpoint", "web")
    assert sent.returncode == 0, sent.stderr
    assert (
        "400 label(s) stored" in sent.stdout and "1 unknown request id(s), not stored: no-such-request" in sent.stdout
    )
    with world.client("olu") as olu:
        performance = olu.run_monitor(ENV, "web-watch")["result"]["values"]["model-performance"]
    assert performance["labelled_rows"] == 400 and performance["accuracy"] == pytest.approx(0.75)


def test_retention_deletes_the_hours_older_than_policy_and_nothing_else_and_audits_each(world: World) -> None:
    """Two hours written 31 and 29 days ago, beside the live traffic: the server's upkeep deletes the first
    alone, and the audit log names it, why, and what went."""
    root = world.settings.environment(ENV).monitoring_dir
    base = requests_folder(root, "web")
    now = datetime.now(UTC)
    old, kept = Hour.of(now - timedelta(days=RETENTION_DAYS + 1)), Hour.of(now - timedelta(days=RETENTION_DAYS - 1))
    for hour, rows in ((old, 3), (kept, 2)):
        at = int(hour.start.timestamp() * 1e6)
        write_part(
            pa.table(
                {"request_id": [f"r{i}" for i in range(rows)], "ts": pa.array([at] * rows, pa.timestamp("us", "UTC"))}
            ),
            hour.folder(base),
        )
    live = world.score(patients(50, seed=9), requests=5, seed=9)
    with world.client("admin") as admin:
        deadline = time.monotonic() + 30
        while not (events := admin.audit(action="monitoring.retention")) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert [e["payload"] for e in events] == [
        {
            "endpoint": "web",
            "hour": old.name,
            "reason": "age",
            "rows": 3,
            "files": 1,
            "bytes": events[0]["payload"]["bytes"],
            "policy": {"max_age_days": RETENTION_DAYS, "max_bytes": None},
        }
    ]
    assert events[0]["environment"] == ENV and events[0]["actor"] == "system" and events[0]["payload"]["bytes"] > 0
    assert not old.folder(base).exists() and kept.folder(base).is_dir()
    assert set(live) <= set(read_requests(root, "web", columns=["request_id"])["request_id"].to_pylist())
