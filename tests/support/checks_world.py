"""A live server whose staging holds three versions for the checks: two of `risk` logged by plain
MLflow (no code snapshot; version 1 good, version 2 trained on shuffled labels), one of `diabetes`
trained by `mlgate train` from a copy of examples/diabetes with a lint error and a failing test, and
one of `forger`, a pickled pyfunc model that predicts noise and tries to write its own passing verdict.
The policy gives lint its own ruff configuration; the snapshot ships a lenient one that must not count.

The config asks for model validation on `holdout` (roc_auc at least 0.85), registered in staging by lee,
the lead (held-out data in staging is the lead's to register; the data scientist is refused).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgate.interfaces.sdk.client import ApiError, Client
from mlgate.snapshot import pack, pack_data
from tests.support.project import LiveServer, Project, start_server
from tests.support.serving_world import clean_env, log_runs, stopped_on_failure

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"
CONFIG = """
checks:
  lint:
    command: ruff check .
    config: |
      line-length = 100
      [lint]
      select = ["F"]
  model-validation:
    data: holdout
    min: 0.85
  endpoint-tests:
    requests: 20
    p95_ms: 5000
"""
SCRIPT = """
import json
import mlflow, mlflow.sklearn
import numpy as np, pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

mlflow.set_experiment("risk")
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(400, 3)), columns=["bmi", "glucose", "pressure"])
y = (X["glucose"] + rng.normal(scale=0.5, size=400) > 0).astype(int)
runs = []
for labels in (y, pd.Series(rng.permutation(y.to_numpy()))):
    model = LogisticRegression().fit(X, labels)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(X, model.predict(X)), input_example=X.head(5),
            pip_requirements=["scikit-learn"],
        )
    runs.append(run.info.run_id)
holdout = pd.DataFrame(rng.normal(size=(300, 3)), columns=["bmi", "glucose", "pressure"])
holdout["outcome"] = (holdout["glucose"] + rng.normal(scale=0.5, size=300) > 0).astype(int)
holdout.to_csv("holdout.csv", index=False)
"""
# Run after SCRIPT, in the same process (one MLflow import for both): a model that tries to pass
# model-validation by forging its verdict: when loaded and when predicting it
# writes a passing result into every writable folder it can find (and under the home, if it can reach
# it) and prints one, while its predictions are noise.
FORGER_SCRIPT = """
import json, os
from pathlib import Path
import mlflow, numpy as np, pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

VERDICT = {"status": "passed", "summary": "roc_auc 1.0000 on 300 held-out rows", "value": 1.0}


class Forger(PythonModel):
    def _forge(self):
        here = Path.cwd()
        places = {here, *list(here.parents)[:3], Path("/tmp"), Path(os.environ.get("HOME", "/tmp"))}
        home = Path(self.home)
        places |= {home, *home.glob("jobs/*"), *home.glob("envs/*/checks/*")}
        for folder in places:
            for name in ("result.json", "validation.json", "verdict.json"):
                try:
                    (folder / name).write_text(json.dumps(VERDICT))
                except OSError:
                    pass
        print(json.dumps(VERDICT), flush=True)

    def load_context(self, context):
        self._forge()

    def predict(self, context, model_input, params=None):
        self._forge()
        return np.random.default_rng().random(len(model_input))


model = Forger()
model.home = "@HOME@"  # the server's home, filled in by build()
X = pd.DataFrame(np.zeros((5, 3)), columns=["bmi", "glucose", "pressure"])
mlflow.set_experiment("forger")
with mlflow.start_run() as run:
    mlflow.pyfunc.log_model(
        name="model", python_model=model, signature=infer_signature(X, np.zeros(5)), pip_requirements=[]
    )
print(json.dumps([*runs, run.info.run_id]))
"""
BROKEN_TESTS = """
def test_passes():
    assert 1 + 1 == 2


def test_fails_on_purpose():
    assert 1 + 1 == 3, "the arithmetic the clinic relies on"
"""


@dataclass
class ChecksWorld:
    project: Project
    server: LiveServer
    root: Path
    requests: dict[str, int] = field(default_factory=dict)  # "risk:1" -> gate A request id

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, user: str) -> Client:
        return Client(self.url, self.project.tokens[user])

    def cli(self, *args: str, user: str = "olu") -> subprocess.CompletedProcess[str]:
        env = clean_env(MLGATE_URL=self.url, MLGATE_TOKEN=self.project.tokens[user])
        return subprocess.run(
            [str(Path(sys.executable).parent / "mlgate"), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


def _promote(world: ChecksWorld, registered: dict[str, Any]) -> int:
    with world.client("lee") as lee:
        lee.decide(registered["request_id"], approve=True, comment="fine")
        deadline = time.monotonic() + 120
        while (request := lee.promotion_request(registered["request_id"]))["state"] != "promoted":
            assert request["state"] not in ("failed", "rejected"), request
            assert time.monotonic() < deadline, request
            time.sleep(0.3)
    return int(request["target_version"])


def _register_holdout(world: ChecksWorld, csv: Path) -> None:
    archive = pack_data(csv, limit=1 << 26)
    with world.client("dana") as dana:
        try:
            dana.register_data("staging", "holdout", archive, source=str(csv))
            raise AssertionError("dana registered held-out data in staging")
        except ApiError as refused:
            assert refused.status_code == 403, refused.message
    with world.client("lee") as lee:
        lee.register_data("staging", "holdout", archive, source=str(csv))


def _diabetes_project(root: Path) -> Path:
    """examples/diabetes with an unused import (lint) that its own ruff.toml lets through, and a failing
    unit test, as a git repository."""
    folder = root / "diabetes"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("data", "mlruns", "__pycache__", ".*_cache"))
    train = folder / "src" / "diabetes" / "train.py"
    train.write_text(train.read_text().replace("import argparse\n", "import argparse\nimport os\n", 1))
    shutil.rmtree(folder / "tests")
    (folder / "tests").mkdir()
    (folder / "tests" / "test_quick.py").write_text(BROKEN_TESTS)
    (folder / "ruff.toml").write_text('[lint]\nignore = ["ALL"]\n')  # the author's lenient lint; policy wins
    return folder


def build(project_template: Project, root: Path) -> ChecksWorld:
    """The world; the caller stops its server (`stop_server(world.server)`)."""
    folder = root / "project"
    project = project_template.copy(folder, config=CONFIG)
    world = ChecksWorld(project=project, server=start_server(project), root=root)
    with stopped_on_failure(world.server), ThreadPoolExecutor(1) as pool:
        # dana's plain MLflow scripts log their runs while the diabetes model trains (independent work)
        logged = pool.submit(_log_plain_runs, world)
        job = _train_diabetes(world)
        runs, forger = logged.result()
        _register_holdout(world, root / "holdout.csv")
        with world.client("dana") as dana:
            registered = [dana.register_model("dev", name="risk", run_id=run_id) for run_id in runs]
            registered.append(dana.register_model("dev", name="diabetes", run_id=job["run_ids"][0]))
            registered.append(dana.register_model("dev", name="forger", run_id=forger[0]))
        for entry in registered:
            version = _promote(world, entry)
            world.requests[f"{entry['name']}:{version}"] = entry["request_id"]
    return world


def _log_plain_runs(world: ChecksWorld) -> tuple[list[str], list[str]]:
    """The two `risk` runs (SCRIPT, which also writes holdout.csv) and the forger's run, in one process."""
    forger_script = FORGER_SCRIPT.replace("@HOME@", str(world.project.settings.home))
    runs = log_runs(world.url, world.project.tokens["dana"], SCRIPT + forger_script, world.root)
    return runs[:2], runs[2:]


def _train_diabetes(world: ChecksWorld) -> dict[str, Any]:
    """The diabetes model, trained by a job from its code snapshot on registered data, as `mlgate train` does."""
    code = _diabetes_project(world.root)
    data = world.root / "diabetes.csv"
    generate = [sys.executable, "-m", "diabetes.data", "--rows", "2000", "--seed", "0", "--out", str(data)]
    made = subprocess.run(generate, env=clean_env(PYTHONPATH=str(code / "src")), capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    with world.client("dana") as dana:
        dana.register_data("dev", "diabetes-train", pack_data(data, limit=1 << 28), source=str(data))
        snapshot = pack(code)
        uploaded = dana.upload_snapshot("dev", snapshot.data, git_commit=None, git_dirty=False)
        job = dana.submit_job("dev", snapshot=uploaded["sha256"])
        deadline = time.monotonic() + 300
        while (job := dana.job("dev", job["id"]))["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
    assert job["state"] == "succeeded", job
    return job
