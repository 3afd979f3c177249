"""Promotion: an approved request's version copied into the next environment's own store and verified.

One server for the module (restarted once, by the crash test). Small sklearn models are logged by a
plain MLflow script through dev's door as dana and registered with `mlgate register`. Requests are
written straight into the control database in state `approved` (deciding them is tested with the
request API) and the server's promotion worker carries them out; what arrives is checked through
the staging and production doors, on disk and with `mlgate models show`.

The crash test starts the server with `MLGATE_TEST_PROMOTION_DELAY_S`, which makes the worker wait
between the verified copy and its record, and kills the server with SIGKILL in that window.

The worker's claim on a request, without MLflow, is tested in test_promotion_claims.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mlgate.adapters.mlflow.copy import PROMOTIONS_EXPERIMENT, REQUEST_TAG
from mlgate.adapters.sql.models import AuditEvent, ModelVersion, Notification
from mlgate.domain.digest import tree_digest
from mlgate.services.promotion.copying import TEST_DELAY_VARIABLE
from tests.support.project import Project, start_server, stop_server
from tests.support.promotion_world import WAIT_S, World, clean_env

FEATURES = ["age", "bmi", "glucose", "pressure"]
DELAY_S = 4.0
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
        env = clean_env(MLFLOW_TRACKING_URI=f"{world.url}/mlflow/dev", MLFLOW_TRACKING_TOKEN=world.tokens["dana"])
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
        env=clean_env(MLFLOW_TRACKING_URI=f"{world.url}/mlflow/staging", MLFLOW_TRACKING_TOKEN=world.tokens["lee"]),
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
