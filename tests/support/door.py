"""The MLflow door as tests reach it: plain MLflow code in a subprocess, and raw HTTP with a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import httpx

from tests.support.project import LiveServer

# An environment's tracking server starts at its first use: the first call to its door waits for it.
DOOR_TIMEOUT_S = 120.0

# What a data scientist writes: plain MLflow and scikit-learn, knowing nothing of mlgate. The model logged
# with `registered_model_name` is registered through the door; a second, logged without a signature,
# cannot be, and the script prints how MLflow's client reports the refusal.
TRAIN_AND_LOG = textwrap.dedent(
    """
    import json, sys
    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException
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
        unsigned = mlflow.sklearn.log_model(model, name="unsigned", pip_requirements=["scikit-learn"])
    try:
        mlflow.register_model(unsigned.model_uri, experiment + "-unsigned")
        refusal = None
    except MlflowException as exc:
        refusal = {"error_code": exc.error_code, "message": exc.message}
    print(json.dumps({
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "experiment_id": run.info.experiment_id,
        "registered": info.registered_model_version,
        "refusal": refusal,
    }))
    """
)


def mlflow_environ(server: LiveServer, env: str, token: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLGATE_"))}
    return environ | {
        "MLFLOW_TRACKING_URI": f"{server.url}/mlflow/{env}",
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }


def plain_mlflow(server: LiveServer, env: str, token: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=mlflow_environ(server, env, token),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def last_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def call(
    server: LiveServer, method: str, env: str, path: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    """One request to `/mlflow/<env>/<path>`; `path` is sent as written (no re-encoding)."""
    headers = kwargs.pop("headers", {}) | ({"Authorization": f"Bearer {token}"} if token else {})
    return httpx.request(method, f"{server.url}/mlflow/{env}/{path}", headers=headers, timeout=DOOR_TIMEOUT_S, **kwargs)


def mlflow_error(response: httpx.Response) -> dict[str, str]:
    """The refusal in MLflow's own shape (what MLflow's client turns into its exception)."""
    body = response.json()
    assert set(body) == {"error_code", "message"}, body
    return {"error_code": body["error_code"], "message": body["message"]}


# Plain MLflow client code as each person in each environment, in one process (MLflow's client reads
# MLFLOW_TRACKING_TOKEN at each request): every read MLflow offers, then a write. Prints, per person and
# environment, "ok" or MLflow's error code for the reads and for the write, and the write's message.
EVERY_ROLE_EVERYWHERE = textwrap.dedent(
    """
    import json, os, sys, tempfile
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    base, tokens, model = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    champions = set(sys.argv[4].split(","))

    def reads(client, env, downloads):
        client.search_experiments(max_results=5)
        client.search_registered_models(max_results=5)
        latest = client.get_latest_versions(model)
        assert latest, f"no latest version of {model} in {env}"
        client.search_model_versions(f"name='{model}'")
        client.search_logged_models(experiment_ids=["0"])
        client.search_traces(locations=["0"])
        if env in champions:
            assert client.get_model_version_by_alias(model, "champion").version
        if downloads:
            uris = [f"models:/{model}/latest"] + ([f"models:/{model}@champion"] if env in champions else [])
            for uri in uris:
                folder = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp())
                assert os.path.exists(os.path.join(folder, "MLmodel")), uri

    results = {}
    for env in ("dev", "staging", "production"):
        downloaded = False
        for user, token in tokens.items():
            os.environ["MLFLOW_TRACKING_TOKEN"] = token
            mlflow.set_tracking_uri(f"{base}/mlflow/{env}")
            client = MlflowClient()
            outcome = {}
            try:
                reads(client, env, downloads=not downloaded)
                outcome["reads"], downloaded = "ok", True
            except MlflowException as exc:
                outcome["reads"] = exc.error_code
            try:
                client.create_experiment(f"matrix-{user}-{env}")
                outcome["write"] = "ok"
            except MlflowException as exc:
                outcome["write"], outcome["message"] = exc.error_code, exc.message
            results[f"{user}@{env}"] = outcome
    print(json.dumps(results))
    """
)
