"""A live server whose production endpoint `web` takes rollouts of `diabetes`, for the rollout tests.

Built once per test module that asks for it, from a copy of the staged template (serving_world: versions
1 and 2 of `diabetes` in staging, both good classifiers) whose config also declares `web` in production
(canary 10/50/100, 2 s bake per step, SLOs), with a real `mlgate server` of its own, and a third version
logged by plain MLflow through dev's door as dana, registered and approved by lee through gate A into
staging: it raises on a negative age (a model bug that only some inputs hit); and a fourth, logged and
promoted with it, that answers fast and without error but the opposite of version 2 (the nearly
constant classifier) on every row. Gate B is passed by
writing an approved request into the control database (as tests/api/test_promotion.py does; deciding
requests is tested elsewhere) for the server's promotion worker to carry out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.serving_world import (
    MANUAL_GATE_B,
    Served,
    from_template,
    promote_runs,
    stopped_on_failure,
    through_gate_b,
)
from tests.support.worlds import Template

ENDPOINT = "web"
BAKE_S = 2
MIN_REQUESTS = 10
MIN_COMPARED = 20
POLICY = f"""
endpoints:
  staging:
    - name: diabetes
      description: the web app's risk score
  production:
    - name: {ENDPOINT}
      description: the clinic's web app
      model: diabetes
      strategy: canary
      steps: [10, 50, 100]
      bake_time_s: {BAKE_S}
      slo: {{max_error_rate: 0.01, p95_ms: 500, min_requests: {MIN_REQUESTS}}}
      quality: {{shadow_share: 0.2, max_disagreement: 0.2, min_compared: {MIN_COMPARED}}}
{MANUAL_GATE_B}"""

# Plain MLflow: on the staged template's data (serving_world.SCRIPT's), a classifier that raises when a
# row's age is negative, and one that answers the opposite of the template's version 2 (the same fit,
# C=1e-6); pickled by value (cloudpickle), their classes being the script's own.
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


class Contrary(LogisticRegression):
    def predict(self, X):
        return 1 - super().predict(X)


mlflow.set_experiment("rollouts")
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["age", "bmi", "glucose", "pressure"])
X["age"] = (X["age"] * 10 + 50).round().astype("int64")
y = (X["glucose"] + rng.normal(scale=0.5, size=300) > 0).astype(int)
runs = []
for model in (NoNegativeAge(C=1.0).fit(X, y), Contrary(C=1e-6).fit(X, y)):
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


def build(staged: Template, root: Path) -> RolloutWorld:
    """The world; the caller stops its server (`stop_server(world.server)`)."""
    world = from_template(staged, root, policy=POLICY, kind=RolloutWorld)
    with stopped_on_failure(world.server):
        promote_runs(world, SCRIPT, name="log_rollout_models.py")
    assert sorted(world.digests) == world.staging == [1, 2, 3, 4]
    return world
