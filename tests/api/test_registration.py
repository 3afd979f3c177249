"""Packaging and registration (the CI step), through the CLI and the MLflow door of a real server.

One server for the module: the diabetes example is trained in `dev` as a data scientist would (data
registered, `mlgate train`), then registered with `mlgate register`; plain-MLflow scripts log the
models that have no job behind them. MLflow itself runs only in the server and in subprocesses.

The world, the scripts and the helpers are in tests/support/registration_world.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlgate.adapters.mlflow.unix_transport import pseudo_host
from mlgate.domain.digest import tree_digest
from mlgate.sockets import tracking_socket
from tests.support.project import Project, bearer, start_server, stop_server
from tests.support.registration_world import (
    ESCAPING_SCRIPT,
    EXAMPLE,
    SNEAKY_SCRIPT,
    World,
    downloaded_through_the_door,
    git_repository,
    log_script_runs,
    run_python,
)

FEATURES = [
    "Pregnancies",
    "PlasmaGlucose",
    "DiastolicBloodPressure",
    "TricepsThickness",
    "SerumInsulin",
    "BMI",
    "DiabetesPedigree",
    "Age",
]
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def world(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server; the example trained in dev by dana through `mlgate train`, on a registered data asset; and,
    logged meanwhile, the runs of a plain MLflow script (`script_runs`)."""
    root = tmp_path_factory.mktemp("registration")
    folder = root / "project"
    server = start_server(project_template.copy(folder))
    try:
        code = root / "diabetes"
        shutil.copytree(EXAMPLE, code, ignore=shutil.ignore_patterns("ci", "data", "mlruns", "__pycache__", ".*cache"))
        git_repository(code)
        data = root / "data" / "diabetes.csv"
        run_python(code, "-m", "diabetes.data", "--out", str(data))
        world = World(server=server, code=code, data=data, job={})
        registered = world.cli("data", "register", "diabetes-train", str(data), "--env", "dev")
        assert registered.returncode == 0, registered.stderr
        with ThreadPoolExecutor(1) as pool:
            world.script = pool.submit(log_script_runs, world)  # independent of the training job
            trained = world.cli("train", "--env", "dev", "--json", "--path", str(code))
            assert trained.returncode == 0, trained.stdout + trained.stderr
            world.job = json.loads(trained.stdout)  # stdout is the JSON document and nothing else
            world.train_log = trained.stderr
        yield world
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def registered(world: World) -> dict[str, Any]:
    return world.register("--env", "dev", "--run", world.run_id, "--name", "diabetes")


@pytest.fixture(scope="module")
def script_runs(world: World) -> dict[str, str]:
    """Runs logged by a plain MLflow script through the door, outside any mlgate job."""
    assert world.script is not None
    return world.script.result()


def test_train_json_prints_only_the_job_with_its_runs(world: World) -> None:
    job = world.job
    assert job["state"] == "succeeded"
    assert len(job["run_ids"]) == 1 and re.fullmatch(r"[0-9a-f]{32}", job["run_ids"][0])
    assert "[mlgate] $ python -m diabetes.train" in world.train_log  # the log went to stderr
    run = world.door("GET", "api/2.0/mlflow/runs/get", params={"run_id": job["run_ids"][0]})
    assert run.status_code == 200
    assert run.json()["run"]["info"]["status"] == "FINISHED"


def test_the_jobs_model_is_registered_with_digest_lineage_profile_and_card(
    world: World, registered: dict[str, Any], tmp_path: Path
) -> None:
    version = registered
    assert (version["name"], version["version"], version["created"]) == ("diabetes", 1, True)
    assert version["run_id"] == world.run_id

    # The version is in dev's MLflow registry, pointing at the logged model, with the digest.
    in_registry = world.versions_in_registry("diabetes")
    assert [(v["version"], v["run_id"]) for v in in_registry] == [("1", world.run_id)]
    assert in_registry[0]["source"] == version["model_uri"]
    assert {t["key"]: t["value"] for t in in_registry[0]["tags"]}["mlgate.digest"] == version["digest"]

    # The digest is the tree digest of the model's bytes, whoever fetches them.
    assert HEX64.match(version["digest"])
    model_id = version["model_uri"].removeprefix("models:/")
    assert tree_digest(downloaded_through_the_door(world, model_id, tmp_path / "model")) == version["digest"]

    # Lineage: the job's code snapshot and git commit, the data version, the run's metrics.
    lineage = version["lineage"]
    assert lineage["job_id"] == world.job["id"]
    assert lineage["snapshot_sha256"] == world.job["snapshot_sha256"]
    assert HEX64.match(lineage["snapshot_sha256"])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=world.code, capture_output=True, text=True, check=True)
    assert lineage["git_commit"] == commit.stdout.strip()
    assert lineage["data"] == ["diabetes-train@1"]
    assert lineage["training_data"]["ref"] == "diabetes-train@1"
    assert lineage["params"]["reg_rate"] == "0.01"
    assert 0.8 < lineage["metrics"]["AUC"] < 0.95

    # Signature and input example come from the model itself.
    assert [s["name"] for s in version["signature"]["inputs"]] == FEATURES
    assert version["input_example"]["columns"] == FEATURES

    # The baseline profile: 8 features, the label and the predictions, each with its bins.
    profile = version["profile"]
    assert profile["data"] == "diabetes-train@1"
    assert profile["rows"] == 10_000
    assert [f["name"] for f in profile["features"]] == FEATURES
    assert profile["label"]["name"] == "Diabetic"
    assert [p["name"] for p in profile["predictions"]] == ["prediction"]
    for column in [*profile["features"], profile["label"], *profile["predictions"]]:
        assert column["type"] == "numeric" and column["null_rate"] == 0.0
        edges, counts = column["bins"]["edges"], column["bins"]["counts"]
        assert len(edges) == len(counts) + 1 and sum(counts) == column["count"], column
        assert column["min"] <= column["max"] and column["std"] > 0
    glucose = next(f for f in profile["features"] if f["name"] == "PlasmaGlucose")
    assert len(glucose["bins"]["counts"]) == 10 and 44 <= glucose["min"] < glucose["max"] <= 192
    assert profile["label"]["bins"]["counts"][1] == pytest.approx(10_000 / 3, rel=0.1)  # a third diabetic
    assert profile["sample"]["rows"] == 10_000

    # The card is filled from the record.
    card = version["card"]
    assert card.startswith("# Model card: diabetes, version 1")
    for expected in ("AUC", "Accuracy", "diabetes-train@1", lineage["git_commit"], version["digest"], "PlasmaGlucose"):
        assert expected in card


def test_registering_the_same_runs_model_again_returns_the_same_version(
    world: World, registered: dict[str, Any]
) -> None:
    again = world.register("--run", world.run_id, "--name", "diabetes", "--env", "dev")
    assert again["created"] is False
    assert (again["version"], again["digest"]) == (registered["version"], registered["digest"])
    assert len(world.versions_in_registry("diabetes")) == 1
    plain = world.cli("register", "--run", world.run_id, "--name", "diabetes")
    assert plain.returncode == 0, plain.stderr
    assert "already registered as diabetes version 1" in plain.stdout
    assert registered["digest"] in plain.stdout


def test_a_model_logged_by_a_plain_mlflow_script_registers_without_a_snapshot(
    world: World, script_runs: dict[str, str]
) -> None:
    version = world.register("--run", script_runs["signed"], "--model", "clf", "--name", "notebook-model")
    assert version["created"] and version["version"] == 1
    lineage = version["lineage"]
    assert lineage["run_id"] == script_runs["signed"]
    assert lineage["job_id"] is None and lineage["snapshot_sha256"] is None and lineage["git_commit"] is None
    assert "no code snapshot" in lineage["code_note"]
    assert lineage["metrics"] == {"AUC": 0.5}
    # No training data recorded, none given: registered with no profile, and it says so.
    assert version["profile"] is None and lineage["data"] == []
    assert any("no baseline profile" in note for note in version["notes"])
    assert "logged outside mlgate jobs: no code snapshot" in version["card"]
    assert "No baseline profile" in version["card"]
    assert [v["version"] for v in world.versions_in_registry("notebook-model")] == ["1"]

    # The same model by its URI, with its training data named: a profile, with the label asked for.
    by_uri = world.register(
        "--model-uri",
        f"models:/{script_runs['model_id']}",
        "--name",
        "notebook-uri",
        "--data",
        "diabetes-train@1",
        "--label",
        "Diabetic",
    )
    assert by_uri["digest"] == version["digest"]  # the same bytes
    assert by_uri["run_id"] == script_runs["signed"]
    assert by_uri["lineage"]["data"] == ["diabetes-train@1"]
    assert by_uri["lineage"]["snapshot_sha256"] is None
    assert by_uri["profile"]["label"]["name"] == "Diabetic"
    assert [f["name"] for f in by_uri["profile"]["features"]] == FEATURES


def test_a_model_without_signature_is_refused_and_nothing_is_registered(
    world: World, script_runs: dict[str, str]
) -> None:
    done = world.cli("register", "--run", script_runs["unsigned"], "--name", "unsigned")
    assert done.returncode == 1
    assert "has no signature" in done.stderr and "infer_signature(X, predictions)" in done.stderr
    assert world.versions_in_registry("unsigned") == []
    assert world.door("GET", "api/2.0/mlflow/registered-models/get", params={"name": "unsigned"}).status_code == 404
    listed = world.cli("models", "list", "--env", "dev", "--json")
    assert "unsigned" not in {v["name"] for v in json.loads(listed.stdout)}


def test_bad_references_are_errors_that_name_them(world: World, registered: dict[str, Any]) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    done = world.cli("register", "--run", unknown, "--name", "diabetes")
    assert done.returncode == 1 and "404" in done.stderr and unknown in done.stderr

    done = world.cli("register", "--run", world.run_id, "--model", "nope", "--name", "diabetes")
    assert done.returncode == 1 and "404" in done.stderr
    assert "no logged model named 'nope'" in done.stderr and "it logged: model" in done.stderr

    done = world.cli("register", "--run", world.run_id, "--name", "diabetes", "--data", "nothing@3")
    assert done.returncode == 1 and "nothing@3" in done.stderr
    assert len(world.versions_in_registry("diabetes")) == 1


def test_who_may_train_and_register(world: World, registered: dict[str, Any]) -> None:
    done = world.cli("train", "--env", "dev", "--path", str(world.code), "--no-wait", user="vic")
    assert done.returncode == 1 and "403" in done.stderr
    done = world.cli("register", "--run", world.run_id, "--name", "vics", user="vic")
    assert done.returncode == 1 and "403" in done.stderr and "'train'" in done.stderr
    done = world.cli("register", "--env", "staging", "--run", world.run_id, "--name", "diabetes")
    assert done.returncode == 1 and "403" in done.stderr and "staging" in done.stderr
    assert world.versions_in_registry("vics") == []
    # A viewer reads what was registered.
    listed = world.cli("models", "list", "--env", "dev", "--json", user="vic")
    assert listed.returncode == 0, listed.stderr
    assert ("diabetes", 1) in {(v["name"], v["version"]) for v in json.loads(listed.stdout)}


def test_models_list_and_show(world: World, registered: dict[str, Any]) -> None:
    listed = world.cli("models", "list", "--env", "dev")
    assert listed.returncode == 0, listed.stderr
    assert "diabetes" in listed.stdout and registered["digest"][:12] in listed.stdout

    shown = world.cli("models", "show", "diabetes:1", "--env", "dev")
    assert shown.returncode == 0, shown.stderr
    for expected in (registered["digest"], world.run_id, "diabetes-train@1", "AUC", "label Diabetic"):
        assert expected in shown.stdout

    card = world.cli("models", "show", "diabetes:1", "--env", "dev", "--card")
    assert card.returncode == 0 and card.stdout == registered["card"] + "\n"

    shown_json = json.loads(world.cli("models", "show", "diabetes:1", "--json").stdout)
    assert shown_json["profile"] == registered["profile"] and shown_json["lineage"] == registered["lineage"]

    missing = world.cli("models", "show", "diabetes:9", "--env", "dev")
    assert missing.returncode == 1 and "no version 9 of model 'diabetes'" in missing.stderr
    bad = world.cli("models", "show", "diabetes", "--env", "dev")
    assert bad.returncode == 2 and "NAME:VERSION" in bad.stderr


def test_a_registration_that_fails_after_mlflow_created_its_version_is_undone(
    world: World, registered: dict[str, Any], script_runs: dict[str, str]
) -> None:
    """mlgate records version 1 of 'fragile'; the registered model is then deleted and recreated in
    MLflow behind mlgate's back (at dev's tracking server itself: the door refuses that), so MLflow hands
    out version 1 again: mlgate refuses to record it twice, and deletes what it had just created in MLflow."""
    first = world.register(
        "--run", script_runs["signed"], "--model", "clf", "--name", "fragile", "--data", "diabetes-train"
    )
    assert first["version"] == 1 and first["profile"]["data"] == "diabetes-train@1"
    kept = world.server.project.settings.env_dir("dev") / "models" / "fragile" / "1"
    profile_file = (kept / "profile.json").read_bytes()
    refused = world.door("DELETE", "api/2.0/mlflow/registered-models/delete", json={"name": "fragile"})
    assert refused.status_code == 403, refused.text
    home = world.server.project.settings.home
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(tracking_socket(home, "dev"))), timeout=60) as behind:
        deleted = behind.request(
            "DELETE",
            f"http://{pseudo_host('dev')}/api/2.0/mlflow/registered-models/delete",
            json={"name": "fragile"},
        )
    assert deleted.status_code == 200, deleted.text

    done = world.cli("register", "--run", world.run_id, "--name", "fragile")
    assert done.returncode == 1 and "409" in done.stderr and "version 1 of 'fragile'" in done.stderr
    assert world.versions_in_registry("fragile") == []
    assert world.door("GET", "api/2.0/mlflow/registered-models/get", params={"name": "fragile"}).status_code == 404
    shown = json.loads(world.cli("models", "show", "fragile:1", "--json").stdout)
    assert shown["digest"] == first["digest"]  # mlgate's record of the first one is untouched, files too
    assert (kept / "profile.json").read_bytes() == profile_file
    assert json.loads(profile_file) == first["profile"]
    assert (kept / "sample.csv").read_text().splitlines()[0] == ",".join([*FEATURES, "Diabetic", "prediction"])


def test_a_model_whose_mlmodel_names_a_file_outside_it_is_refused(world: World) -> None:
    script = world.code.parent / "escapes.py"
    script.write_text(ESCAPING_SCRIPT)
    door = {"MLFLOW_TRACKING_URI": f"{world.url}/mlflow/dev", "MLFLOW_TRACKING_TOKEN": world.tokens["dana"]}
    out = run_python(world.code, str(script), str(world.data), env=door)
    ids: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    for name, said in (("climbs", "../elsewhere/model.pkl"), ("absolute", "/etc/passwd")):
        done = world.cli("register", "--model-uri", f"models:/{ids[name]}", "--name", f"escape-{name}")
        assert done.returncode == 1, done.stdout
        assert "422" in done.stderr and "flavors.sklearn.pickled_model" in done.stderr and said in done.stderr
        assert world.versions_in_registry(f"escape-{name}") == []


def test_registration_scores_the_baseline_in_the_sandbox_and_never_loads_the_model(
    world: World, registered: dict[str, Any]
) -> None:
    home = world.server.project.settings.home
    marker = world.code.parent / "pwned"
    script = world.code.parent / "sneaky.py"
    script.write_text(SNEAKY_SCRIPT.format(features=FEATURES))
    tracking = {"MLFLOW_TRACKING_URI": f"{world.url}/mlflow/dev", "MLFLOW_TRACKING_TOKEN": world.tokens["dana"]}
    out = run_python(world.code, str(script), str(world.data), str(marker), str(home / "control.db"), env=tracking)
    run_id = json.loads(out.strip().splitlines()[-1])["run"]
    assert not marker.exists()  # logging the model did not load it

    version = world.register("--run", run_id, "--name", "sneaky", "--data", "diabetes-train@1", "--label", "Diabetic")
    # Registered with its baseline profile, predictions included: the model ran, in the sandbox.
    assert version["created"] and version["profile"]["label"]["name"] == "Diabetic"
    (predictions,) = version["profile"]["predictions"]
    assert predictions["name"] == "prediction" and predictions["count"] == version["profile"]["sample"]["rows"]
    # Nothing of it ran in the server (no marker), and from where it ran the control DB was out of reach.
    assert not marker.exists()
    assert (home / "control.db").is_file()
    sample = (home / "envs" / "dev" / "models" / "sneaky" / "1" / "sample.csv").read_text().splitlines()
    assert sample[0].endswith(",prediction")
    assert {line.rsplit(",", 1)[1] for line in sample[1:]} == {"0.0"}


def test_a_dev_version_is_deleted_through_mlgate_which_records_it(world: World, script_runs: dict[str, str]) -> None:
    """A model without training data registers without a baseline (no sandboxed scoring): cheap to make."""
    made = world.register("--run", script_runs["signed"], "--model", "clf", "--name", "discarded")
    assert (made["version"], made["created"]) == (1, True) and made["request_id"] is not None
    request_id = made["request_id"]

    # Not while its gate A request is open; never by a viewer; never outside dev.
    done = world.cli("models", "delete", "discarded:1", "--env", "dev")
    assert done.returncode == 1 and "409" in done.stderr and f"request {request_id}" in done.stderr
    done = world.cli("models", "delete", "discarded:1", "--env", "dev", user="vic")
    assert done.returncode == 1 and "403" in done.stderr and "'train'" in done.stderr
    done = world.cli("models", "delete", "discarded:1", "--env", "staging", user="lee")
    assert done.returncode == 1 and "403" in done.stderr
    assert [v["version"] for v in world.versions_in_registry("discarded")] == ["1"]

    rejected = world.cli("requests", "reject", str(request_id), "--comment", "not this one", user="lee")
    assert rejected.returncode == 0, rejected.stderr
    done = world.cli("models", "delete", "discarded:1", "--env", "dev")
    assert done.returncode == 0, done.stderr
    assert "deleted discarded version 1 in dev" in done.stdout and "by dana" in done.stdout

    # Gone from mlgate's lists and pages, and from dev's MLflow registry; the record says who and when.
    listed = json.loads(world.cli("models", "list", "--env", "dev", "--json", user="vic").stdout)
    assert "discarded" not in {v["name"] for v in listed}
    shown = world.cli("models", "show", "discarded:1", "--env", "dev", user="vic")
    assert shown.returncode == 1 and "404" in shown.stderr and "was deleted by dana" in shown.stderr
    reply = httpx.get(
        f"{world.url}/mlflow/dev/api/2.0/mlflow/model-versions/get",
        params={"name": "discarded", "version": "1"},
        headers=bearer(world.tokens["vic"]),
        timeout=60,
    )
    assert reply.status_code == 404, reply.text
    events = json.loads(world.cli("audit", "list", "--action", "model.delete", "--json", user="admin").stdout)
    assert [(e["actor"], e["environment"], e["subject"]) for e in events] == [("dana", "dev", "model:discarded:1")]
    again = world.cli("models", "delete", "discarded:1", "--env", "dev")
    assert again.returncode == 1 and "404" in again.stderr and "was deleted by dana" in again.stderr

    # The same logged model registered again is a new version: the deleted number is never given again.
    anew = world.register("--run", script_runs["signed"], "--model", "clf", "--name", "discarded")
    assert (anew["version"], anew["created"]) == (2, True)
    listed = json.loads(world.cli("models", "list", "--env", "dev", "--name", "discarded", "--json").stdout)
    assert [v["version"] for v in listed] == [2]
