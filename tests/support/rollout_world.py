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

from dataclasses import dataclass
from pathlib import Path

from tests.support import serving_world
from tests.support.project import Project
from tests.support.serving_world import MANUAL_GATE_B, Served, through_gate_b

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
    @property
    def staging(self) -> list[int]:
        """Staging's version of each logged model, in order."""
        return self.promoted

    def through_gate_b(self, version: int) -> int:
        """An approved gate B request for staging's `diabetes` `version`, as sam's approval leaves it."""
        return through_gate_b(self.project, version)


def build(project_template: Project, root: Path) -> RolloutWorld:
    """The world; the caller stops its server (`stop_server(world.server)`)."""
    world = serving_world.build(
        project_template, root, config=ENDPOINTS_CONFIG + MANUAL_GATE_B, script=SCRIPT, kind=RolloutWorld
    )
    assert sorted(world.digests) == [1, 2, 3]
    return world
