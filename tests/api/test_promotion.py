"""Promotion: an approved request's version copied into the next environment's own store and verified.

One server for the module (restarted once, by the crash test). Small sklearn models are logged by a
plain MLflow script through dev's door as dana and registered with `mlgate register`. Requests are
written straight into the control database in state `approved` (deciding them is tested with the
request API) and the server's promotion worker carries them out; what arrives is checked through
the staging and production doors, on disk and with `mlgate models show`.

The crash test starts the server with `MLGATE_TEST_PROMOTION_DELAY_S`, which makes the worker wait
between the verified copy and its record, and kills the server with SIGKILL in that window.

The worker's claim is also tested without MLflow: two workers on one database (SQLite, PostgreSQL)
tick the same approved request at once, with a fake copier.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mlgate.adapters.mlflow.copy import PROMOTIONS_EXPERIMENT, REQUEST_TAG, CopiedVersion, CopySpec
from mlgate.adapters.mlflow.fake import FakeTrackingServers
from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import AuditEvent, Decision, ModelVersion, Notification, PromotionRequest, utcnow
from mlgate.domain.digest import tree_digest
from mlgate.errors import BackendError
from mlgate.services.promotion.copying import TEST_DELAY_VARIABLE, PromotionWorker
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.project import MLGATE, LiveServer, Project, bearer, start_server, stop_server

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures, imported for pytest to find

FEATURES = ["age", "bmi", "glucose", "pressure"]
DELAY_S = 4.0
WAIT_S = 60.0
MODELS = ("risk", "crash", "broken", "clash", "leftover")

# Plain MLflow: one run per model name given, each logging a small signed classifier with an example.
SCRIPT = """
import json, sys
import mlflow, mlflow.sklearn
import numpy as np, pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

runs = {}
mlflow.set_experiment("promotion")
for seed, name in enumerate(sys.argv[1:]):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=["age", "bmi", "glucose", "pressure"])
    y = (X["glucose"] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_metrics({"accuracy": float(model.score(X, y))})
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(3),
            pip_requirements=["scikit-learn"],
        )
    runs[name] = run.info.run_id
print(json.dumps(runs))
"""

# Loads the candidate from the staging door in a fresh process and scores its own input example.
LOAD = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(f"models:/{sys.argv[1]}@candidate")
example = json.loads(sys.argv[2])
print(json.dumps([int(p) for p in model.predict(pd.DataFrame(example["data"], columns=example["columns"]))]))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_", "PYTEST_"))}
    return env | {"MLFLOW_DISABLE_TELEMETRY": "true", **extra}


@dataclass
class World:
    project: Project
    server: LiveServer
    code: Path
    runs: dict[str, str] = field(default_factory=dict)
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def tokens(self) -> dict[str, str]:
        return self.project.tokens

    def cli(self, *args: str, user: str = "dana") -> subprocess.CompletedProcess[str]:
        env = _clean_env(MLGATE_URL=self.url, MLGATE_TOKEN=self.tokens[user])
        return subprocess.run(
            [MLGATE, *args], cwd=self.code, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    def door(self, env: str, method: str, path: str, *, user: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/mlflow/{env}/{path}", headers=bearer(self.tokens[user]), timeout=60, **kwargs
        )

    def versions(self, env: str, name: str, *, user: str = "vic") -> list[dict[str, Any]]:
        """The MLflow registry's versions of `name` in `env`, through the door (vic reads everywhere)."""
        reply = self.door(
            env, "GET", "api/2.0/mlflow/model-versions/search", user=user, params={"filter": f"name='{name}'"}
        )
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] = reply.json().get("model_versions", [])
        return found

    def files_of(self, env: str, model_uri: str) -> Path:
        """Where a logged model's files are on disk, under `env`'s own artifact root."""
        model_id = model_uri.removeprefix("models:/")
        reply = self.door(env, "GET", f"api/2.0/mlflow/logged-models/{model_id}", user="vic")
        assert reply.status_code == 200, reply.text
        location = str(reply.json()["model"]["info"]["artifact_uri"])
        assert location.startswith("mlflow-artifacts:/"), location
        return self.project.settings.environment(env).artifact_root / location.removeprefix("mlflow-artifacts:/")

    def approved_request(
        self, name: str, version: int, *, source: str = "dev", target: str = "staging", state: str = "approved"
    ) -> int:
        """A request in state `approved`, as the final approval leaves it (lee approved it)."""
        return write_approved_request(self.project, name, version, source=source, target=target, state=state)

    def set_state(self, request_id: int, state: str) -> None:
        db = self.project.db()
        try:
            with db.write() as session:
                request = session.get(PromotionRequest, request_id)
                assert request is not None
                request.state = state
        finally:
            db.dispose()

    def record_as_if_promoted(self, name: str, version: int, *, env: str) -> None:
        """A record of `name`:`version` in `env` that MLflow's registry there knows nothing of."""
        db = self.project.db()
        try:
            with db.write() as session:
                source = session.execute(
                    select(ModelVersion).where(ModelVersion.environment == "dev", ModelVersion.name == name)
                ).scalar_one()
                columns = ("name", "digest", "model_uri", "signature", "input_example", "lineage", "profile", "card")
                session.add(
                    ModelVersion(
                        **{c: getattr(source, c) for c in columns},
                        environment=env,
                        version=version,
                        created_by="system",
                        created_at=utcnow(),
                    )
                )
        finally:
            db.dispose()

    def experiment_id(self, env: str, name: str) -> str:
        reply = self.door(
            env, "GET", "api/2.0/mlflow/experiments/get-by-name", user="vic", params={"experiment_name": name}
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["experiment"]["experiment_id"])

    def logged_models_of_request(self, env: str, request_id: int) -> list[dict[str, Any]]:
        body = {
            "experiment_ids": [self.experiment_id(env, PROMOTIONS_EXPERIMENT)],
            "filter": f"tags.`{REQUEST_TAG}` = '{request_id}'",
        }
        reply = self.door(env, "POST", "api/2.0/mlflow/logged-models/search", user="vic", json=body)
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] = reply.json().get("models", [])
        return found

    def upstream(self, env: str) -> httpx.Client:
        """The environment's tracking server itself, behind the door: on its Unix socket in the home's
        private folder, which only the server's user reaches (as the server does)."""
        from mlgate.adapters.mlflow.unix_transport import pseudo_host
        from mlgate.sockets import tracking_socket

        transport = httpx.HTTPTransport(uds=str(tracking_socket(self.project.settings.home, env)))
        return httpx.Client(base_url=f"http://{pseudo_host(env)}", transport=transport, timeout=30)

    def request(self, request_id: int) -> PromotionRequest:
        db = self.project.db()
        try:
            with db.read() as session:
                found = session.get(PromotionRequest, request_id)
                assert found is not None
                return found
        finally:
            db.dispose()

    def wait(self, request_id: int, *states: str, timeout_s: float = WAIT_S) -> PromotionRequest:
        deadline = time.monotonic() + timeout_s
        while True:
            request = self.request(request_id)
            if request.state in states:
                return request
            assert time.monotonic() < deadline, f"request {request_id} is still {request.state}"
            time.sleep(0.2)


def write_approved_request(
    project: Project,
    name: str,
    version: int,
    *,
    source: str,
    target: str,
    state: str = "approved",
    approver: str = "lee",
) -> int:
    """A request for `source`'s `name`:`version` into `target`, as its final approval by `approver` leaves it
    (in `state`), written for the server's promotion worker to carry out."""
    db = project.db()
    try:
        with db.write() as session:
            record = session.execute(
                select(ModelVersion).where(
                    ModelVersion.environment == source, ModelVersion.name == name, ModelVersion.version == version
                )
            ).scalar_one()
            gate = project.settings.gate_into(target)
            request = _approved(record, gate=gate.name, target=target, approver_role=gate.approver_role.value)
            request.state = state
            session.add(request)
            session.flush()
            session.add(Decision(request_id=request.id, actor=approver, decision="approve", at=utcnow()))
            return request.id
    finally:
        db.dispose()


def _approved(record: ModelVersion, *, gate: str, target: str, approver_role: str) -> PromotionRequest:
    now = utcnow()
    return PromotionRequest(
        gate=gate,
        model_version_id=record.id,
        model_name=record.name,
        source_env=record.environment,
        source_version=record.version,
        target_env=target,
        state="approved",
        requested_by="dana",
        author="dana",
        required_approvals=1,
        approver_role=approver_role,
        required_checks=[],
        evidence={"digest": record.digest},
        created_at=now,
        decided_at=now,
    )


@pytest.fixture(scope="module")
def world(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server whose worker pauses before each record; MODELS registered in dev, one version each."""
    root = tmp_path_factory.mktemp("promotion")
    folder = root / "project"
    project = project_template.copy(folder)
    server = start_server(project, env={TEST_DELAY_VARIABLE: str(DELAY_S)})
    code = root / "code"
    code.mkdir()
    world = World(project=project, server=server, code=code)
    try:
        script = code / "log_models.py"
        script.write_text(SCRIPT)
        env = _clean_env(MLFLOW_TRACKING_URI=f"{world.url}/mlflow/dev", MLFLOW_TRACKING_TOKEN=world.tokens["dana"])
        done = subprocess.run(
            [sys.executable, str(script), *MODELS],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        world.runs = json.loads(done.stdout.strip().splitlines()[-1])
        for name, run_id in world.runs.items():
            registered = world.cli("register", "--run", run_id, "--name", name, "--json")
            assert registered.returncode == 0, registered.stderr
            world.registered[name] = json.loads(registered.stdout)
        yield world
    finally:
        stop_server(world.server)


@pytest.fixture(scope="module")
def promoted(world: World) -> dict[str, Any]:
    """risk:1 promoted from dev to staging by an approved request."""
    request_id = world.approved_request("risk", 1)
    request = world.wait(request_id, "promoted", "failed")
    assert request.state == "promoted", request.failure
    return {"request_id": request_id, "target_version": request.target_version}


def test_an_approved_version_is_copied_into_staging_with_its_digest_tags_and_alias(
    world: World, promoted: dict[str, Any]
) -> None:
    source = world.registered["risk"]
    request_id = promoted["request_id"]
    assert promoted["target_version"] == 1

    # The staging registry has the version, tagged with its source, as lee (staging-bound) sees it.
    [version] = world.versions("staging", "risk", user="lee")
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert version["version"] == "1"
    assert {k: v for k, v in tags.items() if k.startswith("mlgate.")} == {
        "mlgate.source.environment": "dev",
        "mlgate.source.name": "risk",
        "mlgate.source.version": "1",
        "mlgate.source.digest": source["digest"],
        "mlgate.request_id": str(request_id),
        "mlgate.digest": source["digest"],
    }
    alias = world.door(
        "staging",
        "GET",
        "api/2.0/mlflow/registered-models/alias",
        user="lee",
        params={"name": "risk", "alias": "candidate"},
    )
    assert alias.status_code == 200 and alias.json()["model_version"]["version"] == "1", alias.text

    # Its bytes are under staging's own artifact root, not dev's, and digest to the source's digest.
    shown = json.loads(world.cli("models", "show", "risk:1", "--env", "staging", "--json", user="lee").stdout)
    assert shown["model_uri"] == version["source"] and shown["model_uri"] != source["model_uri"]
    files = world.files_of("staging", shown["model_uri"])
    settings = world.project.settings
    assert files.is_relative_to(settings.environment("staging").artifact_root)
    assert not files.is_relative_to(settings.environment("dev").artifact_root)
    assert (files / "MLmodel").is_file()
    assert tree_digest(files) == source["digest"]

    # mlgate's record of the copy: same digest, signature, example, lineage; a pointer back.
    assert shown["digest"] == source["digest"]
    for key in ("signature", "input_example", "lineage", "profile", "run_id"):
        assert shown[key] == source[key], key
    assert shown["created_by"] == "system"
    assert [s["name"] for s in shown["signature"]["inputs"]] == FEATURES
    assert shown["card"].startswith(source["card"])
    assert f"promotion request {request_id}, approved by lee" in shown["card"]
    assert [(c["environment"], c["version"], c["request_id"]) for c in shown["chain"]] == [
        ("dev", 1, None),
        ("staging", 1, request_id),
    ]

    # Audited as system; the requester and the author are told.
    db = world.project.db()
    try:
        with db.read() as session:
            actions = session.execute(
                select(AuditEvent.action, AuditEvent.actor).where(
                    AuditEvent.subject.in_([f"request:{request_id}", "model:risk:1"])
                )
            ).all()
            told = session.execute(
                select(Notification.recipient).where(
                    Notification.request_id == request_id, Notification.event == "request.promoted"
                )
            ).scalars()
            assert set(told) >= {"dana"}
    finally:
        db.dispose()
    assert {("request.promoting", "system"), ("request.promote", "system"), ("model.promote", "system")} <= set(actions)


def test_models_show_prints_the_chain_dev_staging_production(world: World, promoted: dict[str, Any]) -> None:
    to_production = world.approved_request("risk", 1, source="staging", target="production")
    request = world.wait(to_production, "promoted", "failed")
    assert request.state == "promoted", request.failure
    assert [v["version"] for v in world.versions("production", "risk")] == ["1"]

    shown = world.cli("models", "show", "risk:1", "--env", "staging", user="vic")
    assert shown.returncode == 0, shown.stderr
    chain = (
        f"dev risk:1 -> staging risk:1 (request {promoted['request_id']}) "
        f"-> production risk:1 (request {to_production})"
    )
    assert chain in shown.stdout, shown.stdout
    in_production = json.loads(
        world.cli("models", "show", "risk:1", "--env", "production", "--json", user="vic").stdout
    )
    assert [c["environment"] for c in in_production["chain"]] == ["dev", "staging", "production"]
    assert in_production["digest"] == world.registered["risk"]["digest"]

    # dana reads dev only: the chain she sees stops there.
    as_dana = json.loads(world.cli("models", "show", "risk:1", "--env", "dev", "--json").stdout)
    assert [c["environment"] for c in as_dana["chain"]] == ["dev"]
    assert "not promoted" in world.cli("models", "show", "crash:1", "--env", "dev").stdout


def test_a_server_killed_mid_promotion_finishes_it_on_restart_with_one_version(world: World) -> None:
    request_id = world.approved_request("crash", 1)
    # The worker has registered the copy and waits DELAY_S before its record: kill the server now.
    deadline = time.monotonic() + WAIT_S
    while not [v for v in world.versions("staging", "crash") if _tags(v).get(REQUEST_TAG) == str(request_id)]:
        assert time.monotonic() < deadline, "the copy never appeared in staging"
        time.sleep(0.2)
    assert world.request(request_id).state == "promoting"
    os.killpg(world.server.process.pid, signal.SIGKILL)
    world.server.process.wait(timeout=30)
    world.project.run("stop")  # the tracking servers the killed server left behind
    assert world.request(request_id).state == "promoting"

    world.server = start_server(world.project)  # no delay this time
    request = world.wait(request_id, "promoted", "failed")
    assert request.state == "promoted", request.failure
    mine = [v for v in world.versions("staging", "crash") if _tags(v).get(REQUEST_TAG) == str(request_id)]
    assert [v["version"] for v in mine] == [str(request.target_version)] == ["1"]
    shown = json.loads(world.cli("models", "show", "crash:1", "--env", "staging", "--json", user="lee").stdout)
    assert (
        shown["digest"]
        == world.registered["crash"]["digest"]
        == tree_digest(world.files_of("staging", shown["model_uri"]))
    )
    alias = world.door(
        "staging",
        "GET",
        "api/2.0/mlflow/registered-models/alias",
        user="lee",
        params={"name": "crash", "alias": "candidate"},
    )
    assert alias.json()["model_version"]["version"] == "1", alias.text


def test_a_version_whose_source_files_are_gone_fails_and_leaves_nothing_in_staging(world: World) -> None:
    broken = world.registered["broken"]
    shutil.rmtree(world.files_of("dev", broken["model_uri"]))
    request_id = world.approved_request("broken", 1)
    request = world.wait(request_id, "promoted", "failed")
    assert request.state == "failed"
    assert request.failure and "version 1 of 'broken' in 'dev'" in request.failure, request.failure
    assert f"({broken['model_uri']}) are missing from the 'dev' artifact store" in request.failure
    assert request.target_version is None
    missing = world.door(
        "staging", "GET", "api/2.0/mlflow/registered-models/get", user="lee", params={"name": "broken"}
    )
    assert missing.status_code == 404, missing.text
    db = world.project.db()
    try:
        with db.read() as session:
            assert (
                session.execute(
                    select(func.count()).select_from(ModelVersion).where(ModelVersion.name == "broken")
                ).scalar_one()
                == 1
            )
            told = session.execute(
                select(Notification.recipient, Notification.payload).where(
                    Notification.request_id == request_id, Notification.event == "request.failed"
                )
            ).all()
    finally:
        db.dispose()
    assert told and told[0][1]["note"] == request.failure


def test_a_copy_whose_record_cannot_be_written_is_deleted_again(world: World, promoted: dict[str, Any]) -> None:
    """mlgate already records version 1 of 'clash' in staging (as if staging's MLflow registry had been
    recreated behind its back), so the copy MLflow numbers 1 cannot be recorded: it is deleted, files too."""
    world.record_as_if_promoted("clash", 1, env="staging")
    staging = world.project.settings.environment("staging").artifact_root
    models = staging / world.experiment_id("staging", PROMOTIONS_EXPERIMENT) / "models"
    before = {p for p in models.rglob("*") if p.is_file()}
    request_id = world.approved_request("clash", 1)
    request = world.wait(request_id, "promoted", "failed")
    assert request.state == "failed" and request.failure and "already records" in request.failure, request.failure
    gone = world.door("staging", "GET", "api/2.0/mlflow/registered-models/get", user="lee", params={"name": "clash"})
    assert gone.status_code == 404, gone.text
    assert world.logged_models_of_request("staging", request_id) == []
    assert {p for p in models.rglob("*") if p.is_file()} == before


def test_what_an_interrupted_attempt_left_is_removed_and_the_copy_made_again(
    world: World, promoted: dict[str, Any]
) -> None:
    """A crashed attempt left a logged model with no files, and another with half its files and a
    registered version: neither is adopted (the version's digest is wrong); both go, one copy remains."""
    request_id = world.approved_request("leftover", 1, state="open")
    upstream = world.upstream("staging")
    staging = world.project.settings.environment("staging").artifact_root

    def mlflow_api(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = upstream.request(method, f"/api/2.0/mlflow/{path}", json=body)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()
        return answer

    tags = [{"key": REQUEST_TAG, "value": str(request_id)}]
    experiment = world.experiment_id("staging", PROMOTIONS_EXPERIMENT)
    planted = []
    for files in (0, 1):
        info = mlflow_api("POST", "logged-models", {"experiment_id": experiment, "name": "leftover", "tags": tags})
        model_id, location = info["model"]["info"]["model_id"], info["model"]["info"]["artifact_uri"]
        location = location.removeprefix("mlflow-artifacts:/")
        for n in range(files):
            put = upstream.put(f"/api/2.0/mlflow-artifacts/artifacts/{location}/part-{n}.bin", content=b"\0" * 64)
            assert put.status_code == 200, put.text
        planted.append((model_id, staging / location))
    mlflow_api("POST", "registered-models/create", {"name": "leftover"})
    source = f"models:/{planted[1][0]}"
    mlflow_api(
        "POST", "model-versions/create", {"name": "leftover", "source": source, "model_id": planted[1][0], "tags": tags}
    )
    assert [v["source"] for v in world.versions("staging", "leftover")] == [source]
    upstream.close()

    world.set_state(request_id, "approved")
    request = world.wait(request_id, "promoted", "failed")
    assert request.state == "promoted", request.failure
    [kept] = world.versions("staging", "leftover")
    assert _tags(kept)[REQUEST_TAG] == str(request_id) and kept["source"] not in {f"models:/{m}" for m, _ in planted}
    assert tree_digest(world.files_of("staging", kept["source"])) == world.registered["leftover"]["digest"]
    assert [m["info"]["model_id"] for m in world.logged_models_of_request("staging", request_id)] == [
        kept["source"].removeprefix("models:/")
    ]
    for model_id, folder in planted:
        reply = world.door("staging", "GET", f"api/2.0/mlflow/logged-models/{model_id}", user="vic")
        assert reply.status_code == 404, reply.text
        assert not folder.exists()


def test_the_staging_copy_loads_and_verifies_after_the_dev_artifact_root_is_removed(
    world: World, promoted: dict[str, Any], tmp_path: Path
) -> None:
    shutil.rmtree(world.project.settings.environment("dev").artifact_root)
    source = world.registered["risk"]
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    example = source["input_example"]
    done = subprocess.run(
        [sys.executable, str(script), "risk", json.dumps(example)],
        env=_clean_env(MLFLOW_TRACKING_URI=f"{world.url}/mlflow/staging", MLFLOW_TRACKING_TOKEN=world.tokens["lee"]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(json.loads(done.stdout.strip().splitlines()[-1])) == len(example["data"])
    shown = json.loads(world.cli("models", "show", "risk:1", "--env", "staging", "--json", user="lee").stdout)
    assert tree_digest(world.files_of("staging", shown["model_uri"])) == source["digest"]


def _tags(version: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in version.get("tags", [])}


# -- the claim, without MLflow: two workers, one approved request ------------------------------------


class FakeCopier:
    """Stands in for MLflow: hands out target versions, slowly, and counts what it was asked."""

    def __init__(self, *, version: int = 1, fail: Exception | None = None) -> None:
        self.version = version
        self.fail = fail
        self.promoted: list[CopySpec] = []
        self.discarded: list[CopiedVersion] = []
        self._lock = threading.Lock()

    def promote(self, spec: CopySpec) -> CopiedVersion:
        with self._lock:
            self.promoted.append(spec)
        time.sleep(0.3)  # long enough for a second worker to try the same request
        if self.fail is not None:
            raise self.fail
        return CopiedVersion(
            environment=spec.target_env,
            name=spec.name,
            version=self.version,
            model_uri="models:/m-0123456789abcdef",
            digest=spec.digest,
            adopted=False,
            previous_candidate=None,
        )

    def discard(self, copied: CopiedVersion) -> None:
        with self._lock:
            self.discarded.append(copied)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def control_db(request: pytest.FixtureRequest, project: Project) -> Iterator[Database]:
    url = project.settings.database_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url)
    migrate.upgrade(db)
    yield db
    db.dispose()


def _approved_in(db: Database, *, digest: str = "ab" * 32) -> int:
    with db.write() as session:
        record = ModelVersion(
            environment="dev",
            name="risk",
            version=1,
            digest=digest,
            run_id=None,
            model_uri="models:/m-fedcba9876543210",
            signature={"inputs": [{"name": "age", "type": "double"}]},
            input_example=None,
            lineage={"metrics": {"accuracy": 0.9}},
            profile=None,
            card="# Model card: risk, version 1",
            source_id=None,
            created_by="dana",
            created_at=utcnow(),
        )
        session.add(record)
        session.flush()
        request = _approved(record, gate="A", target="staging", approver_role="lead-data-scientist")
        session.add(request)
        session.flush()
        return request.id


def _worker(project: Project, db: Database, copier: FakeCopier) -> PromotionWorker:
    settings = project.settings
    return PromotionWorker(settings, db, FakeTrackingServers(settings.env_names), "http://testserver", copier=copier)


def test_two_workers_ticking_at_once_promote_a_request_exactly_once(project: Project, control_db: Database) -> None:
    request_id = _approved_in(control_db)
    copier = FakeCopier()
    workers = [_worker(project, control_db, copier) for _ in range(2)]
    start = threading.Barrier(len(workers))
    done: list[list[int]] = []

    def tick(worker: PromotionWorker) -> None:
        start.wait()
        done.append(worker.tick())

    threads = [threading.Thread(target=tick, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(done) == [[], [request_id]]
    assert len(copier.promoted) == 1
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and request.state == "promoted" and request.target_version == 1
        copies = list(session.execute(select(ModelVersion).where(ModelVersion.environment == "staging")).scalars())
        assert [(c.version, c.source_id, c.created_by) for c in copies] == [(1, request.model_version_id, "system")]
        assert request.target_version_id == copies[0].id
        promotes = session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "request.promote")
        ).scalar_one()
        assert promotes == 1


def test_a_copy_whose_record_cannot_be_written_is_discarded_and_the_request_fails(
    project: Project, control_db: Database
) -> None:
    request_id = _approved_in(control_db)
    with control_db.write() as session:  # staging version 1 is already recorded: the copy's number is taken
        source = session.execute(select(ModelVersion)).scalar_one()
        session.add(
            ModelVersion(
                **{c: getattr(source, c) for c in ("name", "digest", "model_uri", "signature", "lineage", "card")},
                environment="staging",
                version=1,
                input_example=None,
                profile=None,
                created_by="system",
                created_at=utcnow(),
            )
        )
    copier = FakeCopier(version=1)
    assert _worker(project, control_db, copier).tick() == [request_id]
    assert [c.version for c in copier.discarded] == [1]
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and request.state == "failed" and request.target_version is None
        assert request.failure and "already records" in request.failure


def test_an_unreachable_target_store_fails_the_request_with_the_reason(project: Project, control_db: Database) -> None:
    request_id = _approved_in(control_db)
    reason = "the MLflow tracking server of 'staging' failed on creating a logged model for 'risk': refused"
    copier = FakeCopier(fail=BackendError(reason))
    worker = _worker(project, control_db, copier)
    assert worker.tick() == [request_id]
    assert worker.tick() == []  # closed: not tried again
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and (request.state, request.failure) == ("failed", reason)
        assert session.execute(select(ModelVersion).where(ModelVersion.environment == "staging")).first() is None


def test_a_request_left_promoting_is_resumed_at_start_and_not_claimed_by_ticks(
    project: Project, control_db: Database
) -> None:
    request_id = _approved_in(control_db)
    with control_db.write() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None
        request.state = "promoting"
    copier = FakeCopier()
    worker = _worker(project, control_db, copier)
    assert worker.tick() == []  # ticks take approved requests only
    assert worker.resume() == [request_id]
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and request.state == "promoted"
