"""Packaging and registration (the CI step), through the CLI and the MLflow door of a real server.

One server for the module: the diabetes example is trained in `dev` as a data scientist would (data
registered, `mlgate train`), then registered with `mlgate register`; plain-MLflow scripts log the
models that have no job behind them. MLflow itself runs only in the server and in subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlgate.domain.digest import tree_digest
from tests.support.project import MLGATE, LiveServer, Project, bearer, start_server, stop_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"
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

# Plain MLflow, no mlgate: one run logs a model with a signature (`clf`), another one without.
SCRIPT = """
import json, sys
import mlflow, mlflow.sklearn
from mlflow.models import infer_signature
from diabetes.data import read
from diabetes.train import fit, split

parts = split(read(sys.argv[1]))
model = fit(parts.X_train, parts.y_train)
mlflow.set_experiment("notebook")
with mlflow.start_run() as signed:
    mlflow.log_params({"reg_rate": 0.01})
    mlflow.log_metrics({"AUC": 0.5})
    info = mlflow.sklearn.log_model(
        model,
        name="clf",
        signature=infer_signature(parts.X_test, model.predict(parts.X_test)),
        pip_requirements=["scikit-learn"],
    )
with mlflow.start_run() as unsigned:
    mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
print(json.dumps({"signed": signed.info.run_id, "model_id": info.model_id, "unsigned": unsigned.info.run_id}))
"""


@dataclass
class World:
    server: LiveServer
    code: Path  # the customer's repository: a git copy of examples/diabetes
    data: Path
    job: dict[str, Any]  # what `mlgate train --json` printed
    train_log: str = ""  # and what it wrote to stderr
    script: Future[dict[str, str]] | None = None  # the plain MLflow script's runs (`script_runs`)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def tokens(self) -> dict[str, str]:
        return self.server.project.tokens

    @property
    def run_id(self) -> str:
        run_ids: list[str] = self.job["run_ids"]
        assert len(run_ids) == 1, self.job
        return run_ids[0]

    def cli(self, *args: str, user: str = "dana") -> subprocess.CompletedProcess[str]:
        """`mlgate` in the project's repository, with the server and token from the environment, as in CI."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_"))}
        env |= {"MLGATE_URL": self.url, "MLGATE_TOKEN": self.tokens[user]}
        return subprocess.run(
            [MLGATE, *args], cwd=self.code, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    def register(self, *args: str, user: str = "dana") -> dict[str, Any]:
        done = self.cli("register", *args, "--json", user=user)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def door(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """dev's MLflow REST API, through the server's door, as dana."""
        return httpx.request(
            method, f"{self.url}/mlflow/dev/{path}", headers=bearer(self.tokens["dana"]), timeout=60, **kwargs
        )

    def versions_in_registry(self, name: str) -> list[dict[str, Any]]:
        reply = self.door("GET", "api/2.0/mlflow/model-versions/search", params={"filter": f"name='{name}'"})
        assert reply.status_code == 200, reply.text
        versions: list[dict[str, Any]] = reply.json().get("model_versions", [])
        return versions


def _python(world_code: Path, *args: str, env: dict[str, str] | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_", "PYTEST_"))}
    base |= {"PYTHONPATH": str(world_code / "src"), "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    done = subprocess.run(
        [sys.executable, *args], cwd=world_code, env=base, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _git_repository(folder: Path) -> None:
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=Dana", "-c", "user.email=dana@example.com", "commit", "-qm", "diabetes model"],
    ):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


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
        _git_repository(code)
        data = root / "data" / "diabetes.csv"
        _python(code, "-m", "diabetes.data", "--out", str(data))
        world = World(server=server, code=code, data=data, job={})
        registered = world.cli("data", "register", "diabetes-train", str(data), "--env", "dev")
        assert registered.returncode == 0, registered.stderr
        with ThreadPoolExecutor(1) as pool:
            world.script = pool.submit(_log_script_runs, world)  # independent of the training job
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


def _log_script_runs(world: World) -> dict[str, str]:
    script = world.code.parent / "notebook.py"
    script.write_text(SCRIPT)
    out = _python(
        world.code,
        str(script),
        str(world.data),
        env={"MLFLOW_TRACKING_URI": f"{world.url}/mlflow/dev", "MLFLOW_TRACKING_TOKEN": world.tokens["dana"]},
    )
    runs: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return runs


@pytest.fixture(scope="module")
def script_runs(world: World) -> dict[str, str]:
    """Runs logged by a plain MLflow script through the door, outside any mlgate job."""
    assert world.script is not None
    return world.script.result()


def _downloaded_through_the_door(world: World, model_id: str, destination: Path) -> Path:
    """The logged model's files, fetched one by one through dev's MLflow door."""
    reply = world.door("GET", f"api/2.0/mlflow/logged-models/{model_id}")
    assert reply.status_code == 200, reply.text
    location = reply.json()["model"]["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    pending = [""]
    while pending:
        folder = pending.pop()
        listing = world.door("GET", "api/2.0/mlflow-artifacts/artifacts", params={"path": f"{location}/{folder}"})
        assert listing.status_code == 200, listing.text
        for entry in listing.json().get("files", []):
            relative = f"{folder}/{entry['path'].rsplit('/', 1)[-1]}".lstrip("/")
            if entry["is_dir"]:
                pending.append(relative)
                continue
            content = world.door("GET", f"api/2.0/mlflow-artifacts/artifacts/{location}/{relative}")
            assert content.status_code == 200, content.text
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            (destination / relative).write_bytes(content.content)
    return destination


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
    assert tree_digest(_downloaded_through_the_door(world, model_id, tmp_path / "model")) == version["digest"]

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
    MLflow behind mlgate's back, so MLflow hands out version 1 again: mlgate refuses to record it twice,
    and deletes what it had just created in MLflow."""
    first = world.register(
        "--run", script_runs["signed"], "--model", "clf", "--name", "fragile", "--data", "diabetes-train"
    )
    assert first["version"] == 1 and first["profile"]["data"] == "diabetes-train@1"
    kept = world.server.project.settings.env_dir("dev") / "models" / "fragile" / "1"
    profile_file = (kept / "profile.json").read_bytes()
    deleted = world.door("DELETE", "api/2.0/mlflow/registered-models/delete", json={"name": "fragile"})
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


# Plain MLflow: two logged models whose MLmodel is rewritten after logging to name a file outside the model.
ESCAPING_SCRIPT = """
import json, sys, tempfile, pathlib
import mlflow, mlflow.artifacts, mlflow.sklearn, yaml
from mlflow.models import infer_signature
from diabetes.data import read
from diabetes.train import fit, split

parts = split(read(sys.argv[1]))
model = fit(parts.X_train, parts.y_train)
signature = infer_signature(parts.X_test, model.predict(parts.X_test))
mlflow.set_experiment("escapes")
ids = {}
with mlflow.start_run():
    for name, target in (("climbs", "../elsewhere/model.pkl"), ("absolute", "/etc/passwd")):
        info = mlflow.sklearn.log_model(model, name=name, signature=signature, pip_requirements=["scikit-learn"])
        where = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tempfile.mkdtemp())
        local = pathlib.Path(where)
        conf = yaml.safe_load((local / "MLmodel").read_text())
        conf["flavors"]["sklearn"]["pickled_model"] = target
        (local / "MLmodel").write_text(yaml.safe_dump(conf))
        mlflow.MlflowClient().log_model_artifact(info.model_id, str(local / "MLmodel"))
        ids[name] = info.model_id
print(json.dumps(ids))
"""


def test_a_model_whose_mlmodel_names_a_file_outside_it_is_refused(world: World) -> None:
    script = world.code.parent / "escapes.py"
    script.write_text(ESCAPING_SCRIPT)
    door = {"MLFLOW_TRACKING_URI": f"{world.url}/mlflow/dev", "MLFLOW_TRACKING_TOKEN": world.tokens["dana"]}
    out = _python(world.code, str(script), str(world.data), env=door)
    ids: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    for name, said in (("climbs", "../elsewhere/model.pkl"), ("absolute", "/etc/passwd")):
        done = world.cli("register", "--model-uri", f"models:/{ids[name]}", "--name", f"escape-{name}")
        assert done.returncode == 1, done.stdout
        assert "422" in done.stderr and "flavors.sklearn.pickled_model" in done.stderr and said in done.stderr
        assert world.versions_in_registry(f"escape-{name}") == []


# A pickled pyfunc model (its class pickled by value, from the logging script's __main__) that reaches,
# when loaded, for what only the server may touch: a marker written outside any folder it was given,
# and the control database, on which it reports in its predictions.
SNEAKY_SCRIPT = """
import json, sys
import mlflow, numpy as np, pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

MARKER, DATABASE = sys.argv[2], sys.argv[3]


def _can_read(path):
    try:
        with open(path, "rb") as handle:
            return bool(handle.read(1))
    except OSError:
        return False


class Sneaky(PythonModel):
    def load_context(self, context):
        try:
            with open(self.marker, "w") as handle:
                handle.write("loaded in this process")
        except OSError:
            pass

    def predict(self, context, model_input, params=None):
        return [float(_can_read(self.database))] * len(model_input)


model = Sneaky()
model.marker, model.database = MARKER, DATABASE
X = pd.read_csv(sys.argv[1])[{features!r}]
mlflow.set_experiment("sneaky")
with mlflow.start_run() as run:
    mlflow.pyfunc.log_model(
        name="model", python_model=model, signature=infer_signature(X, np.zeros(len(X))), pip_requirements=[]
    )
print(json.dumps({{"run": run.info.run_id}}))
"""


def test_registration_scores_the_baseline_in_the_sandbox_and_never_loads_the_model(
    world: World, registered: dict[str, Any]
) -> None:
    home = world.server.project.settings.home
    marker = world.code.parent / "pwned"
    script = world.code.parent / "sneaky.py"
    script.write_text(SNEAKY_SCRIPT.format(features=FEATURES))
    tracking = {"MLFLOW_TRACKING_URI": f"{world.url}/mlflow/dev", "MLFLOW_TRACKING_TOKEN": world.tokens["dana"]}
    out = _python(world.code, str(script), str(world.data), str(marker), str(home / "control.db"), env=tracking)
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
