"""The `retrain` action end to end: production's population drifts, the monitor fires, and mlgate trains
the production version's code again in dev, registers the result and opens gate A for a person.

One real server for the module. `diabetes` is trained by `mlgate train`'s steps (snapshot upload, job)
from a copy of examples/diabetes as it is, registered by dana, approved by lee through gate A, passed
through gate B by an approved request written into the control database (as tests/test_promotion.py
does; deciding requests and the staging checks have their own tests), and rolled out by the server onto
production's endpoint `web`, which the config declares with `model: diabetes`. Traffic is real: rows of
the example's data generator, scored at the production serving host with the endpoint's key. The
monitor's schedule is long, so the tests run it through the API themselves.

The crash test writes an alert left `starting` (its job submitted, the alert not told) straight into the
database, as a server killed between the two writes leaves it.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mlgate.adapters.monitoring import store
from mlgate.adapters.sql.models import Job, Monitor, MonitorAlert, MonitorResult, utcnow
from mlgate.interfaces.sdk.client import ApiError, Client
from mlgate.snapshot import pack, pack_data
from tests.support.project import LiveServer, Project, start_server, stop_server
from tests.support.serving_world import MANUAL_GATE_B, clean_env, through_gate_b

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"
ENV = "production"
MONITOR = "web-drift"
WINDOW = 300
WAIT_S = 180.0
CONFIG = f"""
endpoints:
  production:
    - {{name: web, description: the clinic's web app, model: diabetes, bake_time_s: 0}}
monitors:
  - name: {MONITOR}
    endpoint: web
    signals: [data-drift, model-performance]
    thresholds: {{min_accuracy: 0.5, min_auc: 0.5}}
    window: {WINDOW} rows
    schedule: 1h
    min_rows: 100
    consecutive: 2
    action: retrain
    retrain: {{cooldown_hours: 24}}
"""
NOT_SENT = {"PatientID", "Diabetic"}  # the web app knows neither the patient's id nor the outcome


@dataclass
class World:
    project: Project
    server: LiveServer
    root: Path
    code: Path
    version: dict[str, Any] = field(default_factory=dict)  # production's diabetes version
    key: str = ""
    url: str = ""  # production's endpoint `web`
    request_ids: dict[str, int] = field(default_factory=dict)

    def client(self, user: str) -> Client:
        return Client(self.server.url, self.project.tokens[user])

    def patients(self, rows: int, *, seed: int, drift: bool = False) -> tuple[list[str], list[list[Any]], list[int]]:
        """Rows of the example's generator: the columns the web app sends, its rows, and the true outcomes."""
        out = self.root / f"patients-{seed}-{'drift' if drift else 'usual'}.csv"
        command = [sys.executable, "-m", "diabetes.data", "--rows", str(rows), "--seed", str(seed), "--out", str(out)]
        made = subprocess.run(
            [*command, *(["--drift"] if drift else [])],
            env=clean_env(PYTHONPATH=str(self.code / "src")),
            capture_output=True,
            text=True,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        with out.open() as handle:
            header, *body = list(csv.reader(handle))
        keep = [i for i, name in enumerate(header) if name not in NOT_SENT]
        outcomes = [int(line[header.index("Diabetic")]) for line in body]
        return [header[i] for i in keep], [[_number(line[i]) for i in keep] for line in body], outcomes

    def score(self, columns: list[str], rows: list[list[Any]], *, per_request: int) -> list[str]:
        """Score the rows at production's endpoint with its key; the request ids, once the host logged them."""
        before = store.read_requests(self.monitoring_dir, "web").num_rows
        ids = []
        with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=30) as http:
            for start in range(0, len(rows), per_request):
                payload = {"dataframe_split": {"columns": columns, "data": rows[start : start + per_request]}}
                answer = http.post(self.url, json=payload)
                assert answer.status_code == 200, answer.text
                ids.append(answer.headers["x-request-id"])
        deadline = time.monotonic() + 20
        while store.read_requests(self.monitoring_dir, "web").num_rows < before + len(rows):
            assert time.monotonic() < deadline, "the serving host did not log the scored rows"
            time.sleep(0.2)
        return ids

    @property
    def monitoring_dir(self) -> Path:
        return self.project.settings.environment(ENV).monitoring_dir

    def run(self) -> dict[str, Any]:
        with self.client("olu") as olu:
            return olu.run_monitor(ENV, MONITOR)

    def alerts(self) -> list[dict[str, Any]]:
        with self.client("olu") as olu:
            return olu.monitor_alerts(ENV, MONITOR)

    def system_jobs(self) -> list[dict[str, Any]]:
        with self.client("lee") as lee:
            return [j for j in lee.jobs("dev", limit=200) if j["requested_by"] == "system"]


def _number(text: str) -> int | float:
    """As the generator wrote it: the integer columns without a decimal point (the signature wants longs)."""
    return float(text) if "." in text else int(text)


def _until(what: str, probe: Any, *, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def _in_production(world: World) -> None:
    """Train `diabetes` in dev from the example, and carry it through both gates onto `web`."""
    data = world.root / "diabetes.csv"
    generate = [sys.executable, "-m", "diabetes.data", "--rows", "2000", "--seed", "0", "--out", str(data)]
    made = subprocess.run(generate, env=clean_env(PYTHONPATH=str(world.code / "src")), capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    with world.client("dana") as dana:
        dana.register_data("dev", "diabetes-train", pack_data(data, limit=1 << 28), source=str(data))
        uploaded = dana.upload_snapshot("dev", pack(world.code).data, git_commit=None, git_dirty=False)
        job = dana.submit_job("dev", snapshot=uploaded["sha256"])
        job = _until(
            "the training job", lambda: (j := dana.job("dev", job["id"]))["state"] not in ("queued", "running") and j
        )
        assert job["state"] == "succeeded", job
        registered = dana.register_model("dev", name="diabetes", run_id=job["run_ids"][0])
    with world.client("lee") as lee:
        lee.decide(registered["request_id"], approve=True, comment="fine")
        promoted = _until(
            "gate A", lambda: (r := lee.promotion_request(registered["request_id"]))["state"] == "promoted" and r
        )
    through_gate_b(world.project, int(promoted["target_version"]))
    with world.client("olu") as olu:

        def rolled_out() -> dict[str, Any] | None:
            done = [
                r for r in olu.rollouts(ENV, endpoint="web") if r["state"] in ("succeeded", "failed", "rolled-back")
            ]
            return done[0] if done else None

        rollout = _until("the rollout onto web", rolled_out)
        assert rollout["state"] == "succeeded", rollout
        world.version = olu.model_version(ENV, "diabetes", rollout["version"])
        world.url = olu.endpoint(ENV, "web")["url"]
        world.key = olu.rotate_key(ENV, "web", "primary")["key"]
    # dana, the model's author, becomes a gate A approver before any retraining: she still may not decide
    # the candidate retrained from her model.
    granted = world.project.run(
        "user",
        "grant",
        "dana",
        "--role",
        "lead-data-scientist",
        "--env",
        "staging",
        token=world.project.tokens["admin"],
        url=world.server.url,
    )
    assert granted.returncode == 0, granted.stderr


@pytest.fixture(scope="module")
def world(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("retraining")
    folder = root / "project"
    project = project_template.copy(folder, config=CONFIG + MANUAL_GATE_B)
    code = root / "diabetes"
    shutil.copytree(EXAMPLE, code, ignore=shutil.ignore_patterns("data", "mlruns", "__pycache__", ".*_cache"))
    built = World(project=project, server=start_server(project), root=root, code=code)
    try:
        _in_production(built)
        yield built
    finally:
        stop_server(built.server)


def test_usual_patients_give_clean_windows_and_no_alert(world: World) -> None:
    columns, rows, _ = world.patients(WINDOW, seed=1)
    world.score(columns, rows, per_request=10)
    for _ in range(2):
        outcome = world.run()
        assert outcome["result"]["verdict"] == "clean", outcome["result"]["breaches"]
        assert outcome["result"]["rows"] == WINDOW and outcome["change"] is None
    assert outcome["result"]["model"] == f"diabetes:{world.version['version']}"
    assert world.alerts() == [] and world.system_jobs() == []


def test_drift_fires_on_the_second_window_and_retrains_into_gate_a(world: World) -> None:
    columns, rows, _ = world.patients(WINDOW, seed=2, drift=True)
    world.score(columns, rows, per_request=10)
    first = world.run()
    assert first["result"]["verdict"] == "breach" and first["change"] is None  # one window: not yet
    second = world.run()
    assert second["change"] == "fire", second
    alert_id = second["alert"]["id"]
    with world.client("olu") as olu:
        told = [n for n in olu.notifications_inbox()["data"] if n["event"] == "monitor.alert"]
    assert len(told) == 1 and MONITOR in told[0]["text"] and "data-drift" in told[0]["text"]

    alert = _until(
        "the retrained candidate",
        lambda: (
            (a := next(x for x in world.alerts() if x["id"] == alert_id))["retrain_state"]
            not in ("none", "starting", "submitted")
            and a
        ),
    )
    assert alert["retrain_state"] == "registered", alert
    assert alert["retrain_data"] == "diabetes-train@1"  # the example declares no label: no window rows added

    (job,) = world.system_jobs()
    assert job["id"] == alert["retrain_job_id"] and job["state"] == "succeeded"
    assert job["snapshot_sha256"] == world.version["lineage"]["snapshot_sha256"]
    with world.client("lee") as lee:
        candidate = lee.model_version("dev", "diabetes", alert["candidate_version"])
        assert candidate["version"] == 2 and candidate["run_id"] == job["run_ids"][0]
        assert candidate["lineage"]["job_id"] == job["id"] and candidate["created_by"] == "system"
        notes = "; ".join(candidate["notes"])
        assert f"monitor {MONITOR} ({ENV}/web)" in notes and f"alert {alert_id}" in notes, notes
        request = lee.promotion_request(alert["request_id"])
        assert request["state"] == "open" and request["gate"] == "A"
        authors = {a["name"]: a["as"] for a in request["evidence"]["authors"]}
        assert authors["dana"] == ["an author of diabetes:1, which it was retrained from"], authors
    with world.client("dana") as dana, pytest.raises(ApiError) as refused:
        dana.decide(alert["request_id"], approve=True, comment="my own model, retrained")
    assert (refused.value.status_code, refused.value.details["rule"]) == (403, "separation-of-duties")
    with world.client("lee") as lee:
        assert (request["model_name"], request["source_env"], request["source_version"]) == ("diabetes", "dev", 2)
        assert alert["request_id"] in [r["id"] for r in lee.waiting_requests()]  # it waits for lee
    world.request_ids["candidate"] = alert["request_id"]


def test_a_second_alert_inside_the_cooldown_does_not_retrain(world: World) -> None:
    columns, rows, _ = world.patients(WINDOW, seed=3)
    world.score(columns, rows, per_request=10)
    assert [world.run()["change"] for _ in range(2)] == [None, "resolve"]
    columns, rows, _ = world.patients(WINDOW, seed=4, drift=True)
    world.score(columns, rows, per_request=10)
    assert [world.run()["change"] for _ in range(2)] == [None, "fire"]
    latest, first = world.alerts()
    assert latest["retrain_state"] == "skipped" and "cooldown" in (latest["retrain_note"] or ""), latest
    assert first["retrain_state"] == "registered"
    assert len(world.system_jobs()) == 1


def test_ground_truth_sent_to_the_host_scores_the_model(world: World) -> None:
    columns, rows, outcomes = world.patients(150, seed=5)
    ids = world.score(columns, rows, per_request=1)
    labelled = 120
    answer = httpx.post(
        world.url.removesuffix("/invocations") + "/feedback",
        json={"request_ids": ids[:labelled], "labels": outcomes[:labelled]},
        headers={"Authorization": f"Bearer {world.key}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json() == {"accepted": labelled, "unknown": []}, answer.text
    performance = world.run()["result"]["values"]["model-performance"]
    assert performance["labelled_rows"] == labelled and performance["kind"] == "classification", performance
    assert 0.6 < performance["accuracy"] <= 1 and performance["auc"] > 0.7


def test_an_alert_left_starting_by_a_crash_takes_its_job_and_is_registered_once(world: World) -> None:
    """The server stopped after submitting a retraining's job (which then ran and succeeded) and before
    recording it on the alert: the sweep takes that job up instead of training again, and registering
    its run finds the version and the open request already there."""
    (first_job,) = world.system_jobs()
    db = world.project.db()
    try:
        with db.write() as session:
            monitor = session.execute(select(Monitor).where(Monitor.name == MONITOR)).scalar_one()
            result_id = session.execute(
                select(func.max(MonitorResult.id)).where(MonitorResult.monitor_id == monitor.id)
            ).scalar_one()
            alert = MonitorAlert(
                monitor_id=monitor.id,
                environment=ENV,
                state="resolved",
                opened_at=utcnow(),
                resolved_at=utcnow(),
                opened_result_id=result_id,
                breaches=[],
                retrain_state="starting",
            )
            session.add(alert)
            session.flush()
            ran = session.get(Job, first_job["id"])
            assert ran is not None
            columns = "environment kind state snapshot_id command data_versions run_ids requested_by created_at"
            columns += " started_at finished_at timeout_s exit_code backend cancel_requested"
            job = Job(
                **{c: getattr(ran, c) for c in columns.split()},
                spec=dict(ran.spec) | {"origin": {"monitor": MONITOR, "environment": ENV, "alert": alert.id}},
            )
            session.add(job)
            session.flush()
            alert_id, job_id = alert.id, job.id
    finally:
        db.dispose()

    resumed = _until(
        "the interrupted retraining",
        lambda: (a := next(x for x in world.alerts() if x["id"] == alert_id))["retrain_state"] == "registered" and a,
        timeout_s=60,
    )
    assert resumed["retrain_job_id"] == job_id and "taken up again" in (resumed["retrain_note"] or ""), resumed
    assert resumed["candidate_version"] == 2 and resumed["request_id"] == world.request_ids["candidate"]
    assert [j["id"] for j in world.system_jobs()] == [job_id, first_job["id"]]  # no job of its own
    with world.client("lee") as lee:
        assert sorted(m["version"] for m in lee.models("dev", name="diabetes")) == [1, 2]
