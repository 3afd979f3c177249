"""A live server whose production endpoint `web` takes rollouts of `diabetes`, for the rollout tests.

Built once per test module that asks for it, from serving_world's pieces: a copy of the template home
whose config declares `web` in production (canary 10/50/100, 2 s bake per step, SLOs), a real `mlgate
server`, and three versions logged by plain MLflow through dev's door as dana, registered and approved
by lee through gate A into staging: 1 and 2 are good classifiers; 3 raises on a negative age (a model
bug that only some inputs hit). Gate B is passed by writing an approved request into the control
database (as tests/test_promotion.py does; deciding requests is tested elsewhere) for the server's
promotion worker to carry out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Project, start_server
from tests.serving_world import MANUAL_GATE_B, Served, clean_env, through_gate_b

ENDPOINT = "web"
BAKE_S = 2
MIN_REQUESTS = 10
ENDPOINTS_CONFIG = f"""
endpoints:
  production:
    - name: {ENDPOINT}
      description: the clinic's web app
      model: diabetes
      strategy: canary
      steps: [10, 50, 100]
      bake_time_s: {BAKE_S}
      slo: {{max_error_rate: 0.01, p95_ms: 500, min_requests: {MIN_REQUESTS}}}
"""

# Plain MLflow: two good classifiers and one that raises when a row's age is negative.
SCRIPT = """
import json
import mlflow, mlflow.sklearn
import numpy as np, pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression


class NoNegativeAge(LogisticRegression):
    def predict(self, X):
        if (np.asarray(X, dtype=float)[:, 0] < 0).any():
            raise ValueError("age must not be negative")
        return super().predict(X)


runs = []
mlflow.set_experiment("rollouts")
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["age", "bmi", "glucose", "pressure"])
X["age"] = (X["age"] * 10 + 50).round().astype("int64")
y = (X["glucose"] + rng.normal(scale=0.5, size=300) > 0).astype(int)
for model in (LogisticRegression(C=1.0), LogisticRegression(C=1e-6), NoNegativeAge(C=1.0)):
    model.fit(X, y)
    with mlflow.start_run() as run:
        mlflow.log_metrics({"accuracy": float(model.score(X, y))})
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, LogisticRegression.predict(model, X)),
            input_example=X.head(3),
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
    runs.append(run.info.run_id)
print(json.dumps(runs))
"""


@dataclass
class RolloutWorld(Served):
    staging: list[int] = field(default_factory=list)  # staging's version of each logged model, in order

    def through_gate_b(self, version: int) -> int:
        """An approved gate B request for staging's `diabetes` `version`, as lee's approval leaves it."""
        return through_gate_b(self.project, version)


def build(project_template: Project, root: Path) -> RolloutWorld:
    """The world; the caller stops its server (`stop_server(world.server)`)."""
    folder = root / "project"
    shutil.copytree(project_template.path, folder)
    with (folder / "mlgate.yaml").open("a") as config:
        config.write(ENDPOINTS_CONFIG + MANUAL_GATE_B)
    project = Project(folder, dict(project_template.tokens))
    world = RolloutWorld(project=project, server=start_server(project), root=root)
    script = root / "log_models.py"
    script.write_text(SCRIPT)
    env = clean_env(MLFLOW_TRACKING_URI=f"{world.url}/mlflow/dev", MLFLOW_TRACKING_TOKEN=project.tokens["dana"])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    with world.client("dana") as dana, world.client("lee") as lee:
        requests = []
        for run_id in runs:
            registered = dana.register_model("dev", name="diabetes", run_id=run_id)
            lee.decide(registered["request_id"], approve=True, comment="fine")
            requests.append(registered)
        for registered in requests:
            deadline = time.monotonic() + 120
            while (request := lee.promotion_request(registered["request_id"]))["state"] != "promoted":
                assert request["state"] not in ("failed", "rejected"), request
                assert time.monotonic() < deadline, request
                time.sleep(0.3)
            world.digests[request["target_version"]] = registered["digest"]
            world.staging.append(request["target_version"])
    assert sorted(world.digests) == [1, 2, 3]
    return world
