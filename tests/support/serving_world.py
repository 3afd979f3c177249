"""A live server with two versions of `diabetes` promoted into staging, for the serving tests.

Built once per test session, as the `staged_template` (tests/conftest.py, tests/support/worlds.py): a
copy of the accounts' home whose config declares the `diabetes` endpoint in staging, a real `mlgate
server` (with its tracking servers and serving hosts), two small classifiers logged by plain MLflow
through dev's door as dana, registered, and approved by lee through gate A, so staging's registry holds
versions 1 and 2 as promotion put them there; then the server is stopped. Each module that uses it gets a
copy with a server of its own (`from_template`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from mlgate.interfaces.sdk.client import Client
from tests.support.project import MLGATE, LiveServer, Project, clean_env, start_server, stop_server
from tests.support.promotion_world import write_approved_request
from tests.support.worlds import PROJECT, Built, Template

FEATURES = ["age", "bmi", "glucose", "pressure"]
ENDPOINTS_CONFIG = "\nendpoints:\n  staging:\n    - name: diabetes\n      description: the web app's risk score\n"
# Gate B is opened by hand here: the staging pipeline (its own tests) would otherwise test each arrival
# on the staging endpoint these tests shape.
MANUAL_GATE_B = (
    "\ngates:\n"
    "  - {name: A, from: dev, to: staging, approver_role: lead-data-scientist}\n"
    "  - name: B\n    from: staging\n    to: production\n    approver_role: software-developer\n"
    "    checks: [lint, unit-tests, model-validation, endpoint-tests]\n    auto_request: false\n"
)
STAGED_POLICY = ENDPOINTS_CONFIG + MANUAL_GATE_B

# Plain MLflow: two runs, each a signed classifier with an input example; the second one is nearly
# constant (heavily regularised), so the two versions answer differently.
SCRIPT = """
import json
import mlflow, mlflow.sklearn
import numpy as np, pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

runs = []
mlflow.set_experiment("serving")
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["age", "bmi", "glucose", "pressure"])
X["age"] = (X["age"] * 10 + 50).round().astype("int64")
y = (X["glucose"] + rng.normal(scale=0.5, size=300) > 0).astype(int)
for c in (1.0, 1e-6):
    model = LogisticRegression(C=c).fit(X, y)
    with mlflow.start_run() as run:
        mlflow.log_metrics({"accuracy": float(model.score(X, y))})
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(3),
            pip_requirements=["scikit-learn"],
        )
    runs.append(run.info.run_id)
print(json.dumps(runs))
"""


@dataclass
class Served:
    project: Project
    server: LiveServer
    root: Path
    digests: dict[int, str] = field(default_factory=dict)  # staging version -> digest
    promoted: list[int] = field(default_factory=list)  # staging's version of each logged model, in order

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, user: str) -> Client:
        return Client(self.url, self.project.tokens[user])

    def cli(self, *args: str, user: str = "olu") -> subprocess.CompletedProcess[str]:
        env = clean_env(MLGATE_URL=self.url, MLGATE_TOKEN=self.project.tokens[user])
        return subprocess.run(
            [MLGATE, *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    def host_url(self, env: str = "staging") -> str:
        with self.client("vic") as vic:
            url = vic.serving_host(env)["url"]
        assert isinstance(url, str)
        return url


def rows(n: int = 5, seed: int = 7) -> list[list[Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [[int(rng.integers(20, 80)), *(float(v) for v in rng.normal(size=3))] for _ in range(n)]


def log_runs(url: str, token: str, script: str, root: Path, *, name: str = "log_models.py") -> list[str]:
    """Run a plain MLflow script against dev's door as the token's owner; the run ids it prints last."""
    path = root / name
    path.write_text(script)
    env = clean_env(MLFLOW_TRACKING_URI=f"{url}/mlflow/dev", MLFLOW_TRACKING_TOKEN=token)
    done = subprocess.run(
        [sys.executable, str(path)], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return runs


World = TypeVar("World", bound=Served)


def build(
    project_template: Project,
    root: Path,
    *,
    config: str = STAGED_POLICY,
    script: str = SCRIPT,
    kind: type[World] = Served,  # type: ignore[assignment]
) -> World:
    """The served world; the caller stops its server (`stop_server(world.server)`). Each model the script
    logs is registered by dana and approved by lee, in order: staging's versions 1, 2, ..."""
    project = project_template.copy(root / PROJECT, config=config)
    world = kind(project=project, server=start_server(project), root=root)
    with stopped_on_failure(world.server):
        promote_runs(world, script)
    return world


@contextmanager
def stopped_on_failure(server: LiveServer) -> Iterator[None]:
    """Stops a world's server if what is done to it while the world is built fails."""
    try:
        yield
    except BaseException:
        stop_server(server)
        raise


def promote_runs(world: Served, script: str, *, name: str = "log_models.py") -> None:
    """Log the script's models through dev's door as dana; dana registers each as `diabetes` and lee
    approves each through gate A; staging's new versions are added to `world.promoted`, in order."""
    runs = log_runs(world.url, world.project.tokens["dana"], script, world.root, name=name)
    first = len(world.promoted) + 1
    with world.client("dana") as dana, world.client("lee") as lee:
        registered = [dana.register_model("dev", name="diabetes", run_id=run_id) for run_id in runs]
        for entry in registered:  # the promotion worker carries them out in this order
            lee.decide(entry["request_id"], approve=True, comment="fine")
        for entry in registered:
            deadline = time.monotonic() + 120
            while (request := lee.promotion_request(entry["request_id"]))["state"] != "promoted":
                assert request["state"] not in ("failed", "rejected"), request
                assert time.monotonic() < deadline, request
                time.sleep(0.3)
            world.digests[request["target_version"]] = entry["digest"]
            world.promoted.append(request["target_version"])
    assert world.promoted[first - 1 :] == list(range(first, first + len(runs))), world.promoted


def template(project_template: Project, root: Path) -> Built:
    """The staged template (tests/conftest.py `staged_template`): `build`'s world, its server stopped."""
    world = build(project_template, root)
    stop_server(world.server)
    assert world.project.path == root / PROJECT
    return Built(world.project.tokens, {"digests": world.digests, "promoted": world.promoted})


def from_template(
    staged: Template,
    root: Path,
    *,
    policy: str | None = None,
    kind: type[World] = Served,  # type: ignore[assignment]
) -> World:
    """A copy of the staged template in `root`, with a server of its own (with `policy` in place of the
    template's, if given); the caller stops it (`stop_server(world.server)`)."""
    project = staged.copy(root, policy=policy)
    digests = {int(version): digest for version, digest in staged.facts["digests"].items()}
    world = kind(project=project, server=start_server(project), root=root, digests=digests)
    world.promoted = list(staged.facts["promoted"])
    return world


def through_gate_b(project: Project, version: int) -> int:
    """An approved gate B request for staging's `diabetes` `version`, as sam's approval leaves it, for the
    server's promotion worker to carry out (deciding requests and their checks are tested elsewhere)."""
    return write_approved_request(project, "diabetes", version, source="staging", target="production", approver="sam")


def score(url: str, key: str, data: list[list[Any]], *, slot: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} | ({"mlgate-deployment": slot} if slot else {})
    payload = {"dataframe_split": {"columns": FEATURES, "data": data}}
    return httpx.post(f"{url}/endpoints/diabetes/invocations", json=payload, headers=headers, timeout=30)
