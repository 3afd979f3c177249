"""The MLflow door: plain MLflow code reaches an environment through /mlflow/<env>/ with an mlgate token,
registering through it makes an mlgate registration, and refusals are MLflow's own errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.door import TRAIN_AND_LOG, call, last_json, mlflow_error, plain_mlflow
from tests.support.project import LiveServer, bearer

pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")


@pytest.fixture(scope="module")
def logged(live_server: LiveServer) -> Iterator[dict[str, Any]]:
    """dana's plain MLflow script, run once against dev: a run, a registered model, a refused one."""
    yield last_json(plain_mlflow(live_server, "dev", live_server.project.tokens["dana"], TRAIN_AND_LOG, "door-dev"))


def test_data_scientist_logs_run_and_model_to_dev(live_server: LiveServer, logged: dict[str, Any]) -> None:
    tokens = live_server.project.tokens
    # The run is in dev's store, attributed to the mlgate user rather than the client's OS user.
    run = call(live_server, "GET", "dev", f"api/2.0/mlflow/runs/get?run_id={logged['run_id']}", tokens["vic"])
    info = run.json()["run"]
    assert info["info"]["user_id"] == "dana"
    assert {"key": "mlflow.user", "value": "dana"} in info["data"]["tags"]
    assert info["data"]["params"] == [{"key": "C", "value": "1.0"}]
    dev_root = live_server.project.settings.environment("dev").artifact_root
    assert list(dev_root.rglob("MLmodel")), "the model's files are not under dev's artifact root"
    prod_root = live_server.project.settings.environment("production").artifact_root
    assert not list(prod_root.rglob("MLmodel"))
    # The creation steps are in the audit log with the person who did them, by the operation MLflow ran.
    audit = httpx.get(
        f"{live_server.url}/api/v1/audit", params={"environment": "dev"}, headers=bearer(tokens["admin"]), timeout=30
    )
    actions = {(e["actor"], e["action"]) for e in audit.json()["data"]}
    assert {("dana", "mlflow.runs.create"), ("dana", "mlflow.registered-models.create")} <= actions
    assert ("dana", "model.register") in actions  # MLflow's register_model became mlgate's registration


def test_register_model_through_the_door_is_an_mlgate_registration(
    live_server: LiveServer, logged: dict[str, Any]
) -> None:
    tokens = live_server.project.tokens
    assert str(logged["registered"]) == "1"
    done = live_server.project.run("models", "show", "door-dev-model:1", "--env", "dev", "--json", token=tokens["vic"])
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert len(shown["digest"]) == 64 and shown["model_uri"] == logged["model_uri"]
    assert shown["signature"]["inputs"] and shown["created_by"] == "dana"
    assert shown["lineage"]["run_id"] == logged["run_id"]
    waiting = httpx.get(
        f"{live_server.url}/api/v1/environments/staging/requests", headers=bearer(tokens["lee"]), timeout=30
    ).json()["data"]
    opened = [r for r in waiting if r["model_name"] == "door-dev-model" and r["source_version"] == 1]
    assert opened and opened[0]["state"] == "open", waiting  # gate A, per the default policy
    # MLflow's registry has the version, tagged with mlgate's digest.
    version = call(live_server, "GET", "dev", "api/2.0/mlflow/model-versions/get?name=door-dev-model&version=1")
    assert version.status_code == 401  # and a token is needed to look
    got = call(
        live_server, "GET", "dev", "api/2.0/mlflow/model-versions/get?name=door-dev-model&version=1", tokens["vic"]
    )
    assert got.status_code == 200, got.text
    assert "model_version" in got.json(), got.text
    tagged = got.json()["model_version"]
    assert {"key": "mlgate.digest", "value": shown["digest"]} in tagged["tags"]


def test_a_version_mlgate_cannot_record_is_refused_naming_mlgate_register(
    live_server: LiveServer, logged: dict[str, Any]
) -> None:
    refusal = logged["refusal"]
    assert refusal is not None, "registering a model without a signature went through"
    assert refusal["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "signature" in refusal["message"] and "mlgate register" in refusal["message"]
    found = call(
        live_server,
        "GET",
        "dev",
        "api/2.0/mlflow/model-versions/search?filter=name%3D%27door-dev-unsigned%27",
        live_server.project.tokens["vic"],
    )
    assert found.status_code == 200 and not found.json().get("model_versions")
    # A version whose source is no logged model at all is refused the same way, and nothing is made.
    refused = call(
        live_server,
        "POST",
        "dev",
        "api/2.0/mlflow/model-versions/create",
        live_server.project.tokens["dana"],
        json={"name": "door-dev-model", "source": "file:///tmp/elsewhere"},
    )
    assert refused.status_code == 400 and "mlgate register" in mlflow_error(refused)["message"]


def test_same_code_is_refused_on_production_as_mlflows_own_error(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    refused = plain_mlflow(live_server, "production", tokens["dana"], TRAIN_AND_LOG, "door-prod")
    assert refused.returncode != 0
    # MLflow's client raises its own exception, with mlgate's reason, not INTERNAL_ERROR around a JSON blob.
    assert "PERMISSION_DENIED" in refused.stderr and "INTERNAL_ERROR" not in refused.stderr
    assert "needs a role bound to 'production'" in refused.stderr
    listing = call(
        live_server, "POST", "production", "api/2.0/mlflow/experiments/search", tokens["sam"], json={"max_results": 100}
    )
    assert listing.status_code == 200
    assert "door-prod" not in [e["name"] for e in listing.json().get("experiments", [])]


@pytest.mark.parametrize("user", ["admin", "sam", "olu", "lee"])
@pytest.mark.parametrize("env", ["staging", "production"])
def test_no_role_writes_to_promotion_only_stores(live_server: LiveServer, user: str, env: str) -> None:
    reply = call(
        live_server,
        "POST",
        env,
        "api/2.0/mlflow/experiments/create",
        live_server.project.tokens[user],
        json={"name": f"sneaky-{user}"},
    )
    assert reply.status_code == 403
    error = mlflow_error(reply)
    # Whatever the caller's roles there, admin included, the store is written by promotion alone.
    assert error["error_code"] == "PERMISSION_DENIED" and "written only by promotion" in error["message"]


def test_read_only_posts_work_for_every_reader(live_server: LiveServer) -> None:
    """MLflow's searches, get_latest_versions, trace searches and GraphQL are POSTs that only read."""
    tokens = live_server.project.tokens
    reads = [
        ("api/2.0/mlflow/experiments/search", {"max_results": 10}),
        ("api/2.0/mlflow/runs/search", {"experiment_ids": ["0"]}),
        ("api/2.0/mlflow/registered-models/get-latest-versions", {"name": "nothing-here"}),
        (
            "api/3.0/mlflow/traces/search",
            {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}}]},
        ),
        ("api/2.0/mlflow/logged-models/search", {"experiment_ids": ["0"]}),
        ("graphql", {"query": "query { mlflowSearchModelVersions(input: {}) { modelVersions { name } } }"}),
    ]
    for user, env in (("vic", "production"), ("olu", "staging"), ("sam", "production")):
        for path, body in reads:
            reply = call(live_server, "POST", env, path, tokens[user], json=body)
            assert reply.status_code in (200, 404), f"{user} {env} {path}: {reply.status_code} {reply.text[:300]}"
            if reply.status_code == 404:  # the model does not exist: MLflow's answer, not a refusal
                assert reply.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", reply.text


def test_reads_follow_role_bindings(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    search = "api/2.0/mlflow/experiments/search"
    refused = call(live_server, "POST", "production", search, tokens["dana"], json={})
    assert refused.status_code == 403
    assert "'read' in 'production' needs a role bound to 'production'" in mlflow_error(refused)["message"]
    assert call(live_server, "POST", "dev", search, tokens["vic"], json={"max_results": 10}).status_code == 200
    write = call(live_server, "POST", "dev", "api/2.0/mlflow/experiments/create", tokens["vic"], json={"name": "v"})
    assert write.status_code == 403 and "'train' in 'dev' needs one of the roles" in mlflow_error(write)["message"]


def test_door_needs_a_valid_token(live_server: LiveServer) -> None:
    search = "api/2.0/mlflow/experiments/search"
    missing = call(live_server, "POST", "dev", search, json={})
    assert missing.status_code == 401 and mlflow_error(missing)["error_code"] == "UNAUTHENTICATED"
    forged = call(live_server, "POST", "dev", search, "mlg_not-a-real-token", json={})
    assert forged.status_code == 401 and mlflow_error(forged)["error_code"] == "UNAUTHENTICATED"
    # Basic auth with the token as password works too, for tools that only speak Basic.
    basic = httpx.post(
        f"{live_server.url}/mlflow/dev/{search}",
        json={"max_results": 10},
        auth=("dana", live_server.project.tokens["dana"]),
        timeout=60,
    )
    assert basic.status_code == 200


def test_unknown_environment_is_404(live_server: LiveServer) -> None:
    path = "api/2.0/mlflow/experiments/get-by-name?experiment_name=x"
    reply = call(live_server, "GET", "qa", path, live_server.project.tokens["admin"])
    assert reply.status_code == 404
    error = mlflow_error(reply)
    assert error["error_code"] == "RESOURCE_DOES_NOT_EXIST" and "qa" in error["message"]
