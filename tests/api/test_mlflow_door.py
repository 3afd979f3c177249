"""The MLflow door: plain MLflow code reaches an environment through /mlflow/<env>/ with an mlgate token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

from tests.support.project import LiveServer, bearer

# An environment's tracking server starts at its first use: the first call to its door waits for it.
DOOR_TIMEOUT_S = 120.0


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=DOOR_TIMEOUT_S, **kwargs)


def _get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=DOOR_TIMEOUT_S, **kwargs)


# What a data scientist writes: plain MLflow and scikit-learn, knowing nothing of mlgate.
TRAIN_AND_LOG = textwrap.dedent(
    """
    import json, sys
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    experiment = sys.argv[1]
    mlflow.set_experiment(experiment)
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    with mlflow.start_run() as run:
        model = LogisticRegression().fit(X, y)
        mlflow.log_param("C", 1.0)
        mlflow.log_metric("accuracy", float(model.score(X, y)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=X[:2],
            pip_requirements=["scikit-learn"],
            registered_model_name=experiment + "-model",
        )
    print(json.dumps({"run_id": run.info.run_id, "model_uri": info.model_uri}))
    """
)


def plain_mlflow(server: LiveServer, env: str, token: str, experiment: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLGATE_"))}
    environ |= {
        "MLFLOW_TRACKING_URI": f"{server.url}/mlflow/{env}",
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    return subprocess.run(
        [sys.executable, "-c", TRAIN_AND_LOG, experiment],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_data_scientist_logs_run_and_model_to_dev(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    done = plain_mlflow(live_server, "dev", tokens["dana"], "door-dev")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # The run is in dev's store, attributed to the mlgate user rather than the client's OS user.
    run = _get(
        f"{live_server.url}/mlflow/dev/api/2.0/mlflow/runs/get",
        params={"run_id": result["run_id"]},
        headers=bearer(tokens["vic"]),
    ).json()["run"]
    assert run["info"]["user_id"] == "dana"
    assert {"key": "mlflow.user", "value": "dana"} in run["data"]["tags"]
    assert run["data"]["params"] == [{"key": "C", "value": "1.0"}]

    # The model is registered in dev's registry, and its bytes sit under dev's artifact root.
    versions = _get(
        f"{live_server.url}/mlflow/dev/api/2.0/mlflow/model-versions/search",
        params={"filter": "name='door-dev-model'"},
        headers=bearer(tokens["lee"]),
    ).json()["model_versions"]
    assert [v["version"] for v in versions] == ["1"]
    dev_root = live_server.project.settings.environment("dev").artifact_root
    assert list(dev_root.rglob("MLmodel")), "the model's files are not under dev's artifact root"
    prod_root = live_server.project.settings.environment("production").artifact_root
    assert not list(prod_root.rglob("MLmodel"))

    # The creation steps are in the audit log with the person who did them.
    events = _get(
        f"{live_server.url}/api/v1/audit", params={"environment": "dev"}, headers=bearer(tokens["admin"])
    ).json()["data"]
    actions = {(e["actor"], e["action"]) for e in events}
    assert ("dana", "mlflow.runs.create") in actions
    assert ("dana", "mlflow.registered-models.create") in actions


def test_same_code_is_refused_on_production(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    refused = plain_mlflow(live_server, "production", tokens["dana"], "door-prod")
    assert refused.returncode != 0
    assert "403" in refused.stderr or "forbidden" in refused.stderr
    # Nothing was written there.
    listing = _post(
        f"{live_server.url}/mlflow/production/api/2.0/mlflow/experiments/search",
        json={"max_results": 100},
        headers=bearer(tokens["sam"]),
    )
    assert listing.status_code == 200
    names = [e["name"] for e in listing.json().get("experiments", [])]
    assert "door-prod" not in names


@pytest.mark.parametrize("user", ["admin", "sam", "olu", "lee"])
@pytest.mark.parametrize("env", ["staging", "production"])
def test_no_role_writes_to_promotion_only_stores(live_server: LiveServer, user: str, env: str) -> None:
    token = live_server.project.tokens[user]
    reply = _post(
        f"{live_server.url}/mlflow/{env}/api/2.0/mlflow/experiments/create",
        json={"name": f"sneaky-{user}"},
        headers=bearer(token),
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "forbidden"
    # Whatever the caller's roles there, admin included, the store is written by promotion alone.
    assert "written only by promotion" in reply.json()["error"]["message"]


def test_reads_follow_role_bindings(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    search = "api/2.0/mlflow/experiments/search"
    # sam is bound to production: reads it; dana is bound to dev only: refused there.
    ok = _post(
        f"{live_server.url}/mlflow/production/{search}",
        json={"max_results": 10},
        headers=bearer(tokens["sam"]),
    )
    assert ok.status_code == 200
    refused = _post(f"{live_server.url}/mlflow/production/{search}", json={}, headers=bearer(tokens["dana"]))
    assert refused.status_code == 403
    assert "production" in refused.json()["error"]["message"]
    # A viewer reads dev but may not write to it.
    assert (
        _post(
            f"{live_server.url}/mlflow/dev/{search}", json={"max_results": 10}, headers=bearer(tokens["vic"])
        ).status_code
        == 200
    )
    write = _post(
        f"{live_server.url}/mlflow/dev/api/2.0/mlflow/experiments/create",
        json={"name": "viewer-writes"},
        headers=bearer(tokens["vic"]),
    )
    assert write.status_code == 403
    assert "train" in write.json()["error"]["message"]


def test_door_needs_a_valid_token(live_server: LiveServer) -> None:
    url = f"{live_server.url}/mlflow/dev/api/2.0/mlflow/experiments/search"
    assert _post(url, json={}).status_code == 401
    assert _post(url, json={}, headers=bearer("mlg_not-a-real-token")).status_code == 401
    # Basic auth with the token as password works too, for tools that only speak Basic.
    basic = _post(url, json={"max_results": 10}, auth=("dana", live_server.project.tokens["dana"]))
    assert basic.status_code == 200


def test_unknown_environment_is_404(live_server: LiveServer) -> None:
    reply = _get(
        f"{live_server.url}/mlflow/qa/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "x"},
        headers=bearer(live_server.project.tokens["admin"]),
    )
    assert reply.status_code == 404
    assert "qa" in reply.json()["error"]["message"]


def test_lineage_tags_cannot_be_forged(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    base = f"{live_server.url}/mlflow/dev/api/2.0/mlflow"
    experiment = _post(f"{base}/experiments/create", json={"name": "forgery"}, headers=bearer(tokens["dana"]))
    assert experiment.status_code == 200, experiment.text
    created = _post(
        f"{base}/runs/create",
        json={
            "experiment_id": experiment.json()["experiment_id"],
            "tags": [{"key": "mlgate.job_id", "value": "1"}, {"key": "team", "value": "a"}],
        },
        headers=bearer(tokens["dana"]),
    )
    assert created.status_code == 200, created.text
    run = created.json()["run"]
    keys = {t["key"] for t in run["data"]["tags"]}
    assert "team" in keys and "mlgate.job_id" not in keys  # dropped on the way in
    for path, body in (
        ("runs/set-tag", {"run_id": run["info"]["run_id"], "key": "mlgate.snapshot_sha256", "value": "0" * 64}),
        ("runs/log-batch", {"run_id": run["info"]["run_id"], "tags": [{"key": "mlgate.job_id", "value": "7"}]}),
    ):
        refused = _post(f"{base}/{path}", json=body, headers=bearer(tokens["dana"]))
        assert refused.status_code == 422, refused.text
        assert "mlgate." in refused.json()["error"]["message"]
    tags = _get(f"{base}/runs/get", params={"run_id": run["info"]["run_id"]}, headers=bearer(tokens["dana"]))
    assert not [t for t in tags.json()["run"]["data"]["tags"] if t["key"].startswith("mlgate.")]
