"""The registration tests' world and its parts: the diabetes example to train, the plain-MLflow scripts
that log models with no job behind them, and helpers to run them and read what they logged.

`World` is a live server with the example trained in dev (tests/api/test_registration.py builds it);
its `cli` runs `mlgate` in the example's repository as CI would, and `door` reaches dev's MLflow REST
API through the server as dana. `run_python` runs a script with the example's code importable, and
`downloaded_through_the_door` fetches a logged model's files one by one through dev's door.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.project import MLGATE, LiveServer, bearer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"


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


def run_python(world_code: Path, *args: str, env: dict[str, str] | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_", "PYTEST_"))}
    base |= {"PYTHONPATH": str(world_code / "src"), "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    done = subprocess.run(
        [sys.executable, *args], cwd=world_code, env=base, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def git_repository(folder: Path) -> None:
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=Dana", "-c", "user.email=dana@example.com", "commit", "-qm", "diabetes model"],
    ):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def log_script_runs(world: World) -> dict[str, str]:
    script = world.code.parent / "notebook.py"
    script.write_text(SCRIPT)
    out = run_python(
        world.code,
        str(script),
        str(world.data),
        env={"MLFLOW_TRACKING_URI": f"{world.url}/mlflow/dev", "MLFLOW_TRACKING_TOKEN": world.tokens["dana"]},
    )
    runs: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return runs


def downloaded_through_the_door(world: World, model_id: str, destination: Path) -> Path:
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
