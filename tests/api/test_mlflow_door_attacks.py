"""The MLflow door attacked: ambiguous encodings on every write route, writes to what mlgate recorded,
oversized bodies, the surfaces mlgate does not offer, and the MLflow UI's session without its CSRF proof."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from mlgate.domain.mlflow_operations import Kind, table
from tests.support.door import TRAIN_AND_LOG, call, last_json, mlflow_error, plain_mlflow
from tests.support.memory import PeakRss
from tests.support.project import LiveServer, bearer
from tests.support.web_world import signed_in

MIB = 1024 * 1024
# Ways to write a path that a proxy and MLflow could read as two different operations.
AMBIGUOUS = {
    "encoded ?": "%3F/search",
    "encoded #": "%23/search",
    "double-encoded /": "%252Fsearch",
    "matrix parameter": ";/search",
    "backslash": "%5C..%5Csearch",
    "dot segment": "/../search",
    "encoded dot segment": "/%2E%2E/search",
    "NUL": "%00",
    "empty segment": "//search",
}


@pytest.fixture(scope="module")
def recorded(live_server: LiveServer) -> Iterator[dict[str, Any]]:
    """A version recorded by mlgate, registered by dana's plain MLflow script through the door."""
    yield last_json(plain_mlflow(live_server, "dev", live_server.project.tokens["dana"], TRAIN_AND_LOG, "immutable"))


def _sample(pattern: str) -> str:
    path = pattern.replace("{api}", "/api")
    return re.sub(r"<(?:path:)?(\w+)>", "x1", path).lstrip("/")


def _audit_count(server: LiveServer) -> int:
    reply = httpx.get(
        f"{server.url}/api/v1/audit",
        params={"limit": 10_000},
        headers=bearer(server.project.tokens["admin"]),
        timeout=30,
    )
    return int(reply.json()["count"])


def test_ambiguous_encodings_are_refused_on_every_write_route(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    writes = [op for op in table().operations if op.kind is Kind.WRITE]
    assert len(writes) > 50
    before = _audit_count(live_server)
    failures = []
    # http.client sends the path as written: httpx (like a browser) would resolve the dot segments first.
    connection = http.client.HTTPConnection(urlsplit(live_server.url).netloc, timeout=60)
    try:
        for operation in writes:
            for label, tail in AMBIGUOUS.items():
                for env, who in (("dev", "dana"), ("production", "vic")):
                    url = f"/mlflow/{env}/{_sample(operation.pattern)}{tail}"
                    headers = bearer(tokens[who]) | {"content-type": "application/json"}
                    connection.request(operation.method, url, body=b'{"name": "x"}', headers=headers)
                    reply = connection.getresponse()
                    error = json.loads(reply.read() or b"{}")
                    if reply.status != 400 or error.get("error_code") != "INVALID_PARAMETER_VALUE":
                        failures.append(f"{who} {operation.method} {url} ({label}): {reply.status} {error}")
    finally:
        connection.close()
    assert not failures, "\n".join(failures[:40])
    # Nothing was written: no run in production, no audit event.
    runs = call(
        live_server, "POST", "production", "api/2.0/mlflow/runs/search", tokens["vic"], json={"experiment_ids": ["0"]}
    )
    assert runs.status_code == 200 and not runs.json().get("runs")
    assert _audit_count(live_server) == before


def test_a_viewer_cannot_dress_a_write_as_a_read(live_server: LiveServer) -> None:
    """The attack the suffix check let through: `runs/create%3F/search` looked like a search to the door."""
    tokens = live_server.project.tokens
    attack = call(
        live_server,
        "POST",
        "production",
        "api/2.0/mlflow/runs/create%3F/search",
        tokens["vic"],
        json={"experiment_id": "0"},
    )
    assert attack.status_code == 400 and "'?'" in mlflow_error(attack)["message"]
    # An encoded '/' decodes, for MLflow too, into the write it is: refused as the write it is.
    write = call(
        live_server, "POST", "production", "api/2.0/mlflow/runs%2Fcreate", tokens["vic"], json={"experiment_id": "0"}
    )
    assert write.status_code == 403 and "written only by promotion" in mlflow_error(write)["message"]


def test_what_mlgate_recorded_is_immutable_through_the_door(live_server: LiveServer, recorded: dict[str, Any]) -> None:
    dana = live_server.project.tokens["dana"]
    model_id, name = recorded["model_id"], "immutable-model"
    files = live_server.project.settings.environment("dev").artifact_root
    mlmodel = next(p for p in files.rglob("MLmodel") if model_id in p.parts)
    original = mlmodel.read_bytes()
    relative = mlmodel.relative_to(files).as_posix()
    attempts = [
        ("PUT", f"api/2.0/mlflow-artifacts/artifacts/{relative}", {"content": b"flavors: {}\n"}, 403),
        ("DELETE", f"api/2.0/mlflow-artifacts/artifacts/{relative}", {}, 403),
        ("DELETE", "api/2.0/mlflow/model-versions/delete", {"json": {"name": name, "version": "1"}}, 403),
        ("DELETE", "api/2.0/mlflow/registered-models/delete", {"json": {"name": name}}, 403),
        ("POST", "api/2.0/mlflow/registered-models/rename", {"json": {"name": name, "new_name": "x"}}, 403),
        ("DELETE", f"api/2.0/mlflow/logged-models/{model_id}", {}, 403),
        ("POST", "api/2.0/mlflow/runs/delete", {"json": {"run_id": recorded["run_id"]}}, 403),
        (
            "POST",
            "api/2.0/mlflow/model-versions/set-tag",
            {"json": {"name": name, "version": "1", "key": "mlgate.digest", "value": "0"}},
            400,
        ),
        (
            "POST",
            "api/2.0/mlflow/runs/set-tag",
            {"json": {"run_id": recorded["run_id"], "key": "mlflow.user", "value": "lee"}},
            400,
        ),
        (
            "POST",
            "api/2.0/mlflow/runs/log-batch",
            {"json": {"runId": recorded["run_id"], "tags": [{"key": "mlgate.job_id", "value": "7"}]}},
            400,
        ),
    ]
    for method, path, body, status in attempts:
        reply = call(live_server, method, "dev", path, dana, **body)
        assert reply.status_code == status, f"{method} {path}: {reply.status_code} {reply.text[:300]}"
        assert mlflow_error(reply)["message"]
    assert mlmodel.read_bytes() == original
    deleted = call(
        live_server, "DELETE", "dev", "api/2.0/mlflow/model-versions/delete", dana, json={"name": name, "version": "1"}
    )
    assert "mlgate models delete" in mlflow_error(deleted)["message"]
    still = call(live_server, "GET", "dev", f"api/2.0/mlflow/model-versions/get?name={name}&version=1", dana)
    assert still.status_code == 200
    run = call(live_server, "GET", "dev", f"api/2.0/mlflow/runs/get?run_id={recorded['run_id']}", dana).json()["run"]
    assert run["info"]["lifecycle_stage"] == "active"
    assert {"key": "mlflow.user", "value": "dana"} in run["data"]["tags"]


def test_bodies_are_bounded(live_server: LiveServer, recorded: dict[str, Any]) -> None:
    dana = live_server.project.tokens["dana"]
    big = b'{"run_id": "' + b"x" * (17 * MIB) + b'"}'
    reply = call(
        live_server,
        "POST",
        "dev",
        "api/2.0/mlflow/runs/log-batch",
        dana,
        content=big,
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 413 and mlflow_error(reply)["error_code"] == "INVALID_PARAMETER_VALUE"
    # An upload that claims more than its cap is refused before a byte of it is read.
    connection = http.client.HTTPConnection(urlsplit(live_server.url).netloc, timeout=60)
    try:
        connection.putrequest(
            "PUT", f"/mlflow/dev/api/2.0/mlflow-artifacts/artifacts/0/{recorded['run_id']}/artifacts/huge.bin"
        )
        for key, value in bearer(dana).items():
            connection.putheader(key, value)
        connection.putheader("Content-Length", str(64 * 1024 * MIB))
        connection.endheaders()
        claimed = connection.getresponse()
        assert claimed.status == 413, claimed.read()[:300]
        assert json.loads(claimed.read())["error_code"] == "INVALID_PARAMETER_VALUE"
    finally:
        connection.close()
    # And an upload must say how long it is: a chunked one is refused.
    chunked = call(
        live_server,
        "PUT",
        "dev",
        f"api/2.0/mlflow-artifacts/artifacts/0/{recorded['run_id']}/artifacts/chunked.bin",
        dana,
        content=iter([b"abc"]),
    )
    assert chunked.status_code == 411, chunked.text


def test_a_300_mib_upload_streams_through_the_server(live_server: LiveServer, recorded: dict[str, Any]) -> None:
    dana = live_server.project.tokens["dana"]
    pid = live_server.process.pid
    path = f"api/2.0/mlflow-artifacts/artifacts/{recorded['experiment_id']}/{recorded['run_id']}/artifacts/big.bin"

    def body() -> Iterator[bytes]:
        chunk = b"\x5a" * MIB
        for _ in range(300):
            yield chunk

    with PeakRss(pid) as peak:
        reply = call(live_server, "PUT", "dev", path, dana, content=body(), headers={"content-length": str(300 * MIB)})
    assert reply.status_code == 200, reply.text[:300]
    stored = next(live_server.project.settings.environment("dev").artifact_root.rglob("big.bin"))
    assert stored.stat().st_size == 300 * MIB
    assert peak.growth < 50, f"the server grew {peak.growth:.0f} MiB during the upload"
    stored.unlink()


@pytest.mark.parametrize(
    ("method", "path", "reason"),
    [
        ("POST", "ajax-api/3.0/mlflow/assistant/message", "assistant"),
        ("POST", "gateway/openai/v1/chat/completions", "gateway"),
        ("POST", "api/3.0/mlflow/gateway/secrets/create", "gateway"),
        ("POST", "ajax-api/3.0/jobs/", "job"),
        ("POST", "api/2.0/mlflow/webhooks", "webhooks"),
        ("GET", "api/3.0/mlflow/mcp-servers", "MCP"),
        ("POST", "api/2.0/mlflow/not-a-route", "not an MLflow operation the door knows"),
    ],
)
def test_surfaces_mlgate_does_not_offer_are_denied(
    live_server: LiveServer, method: str, path: str, reason: str
) -> None:
    reply = call(live_server, method, "dev", path, live_server.project.tokens["dana"], json={})
    assert reply.status_code == 403
    error = mlflow_error(reply)
    assert error["error_code"] == "PERMISSION_DENIED" and reason in error["message"]


def test_the_mlflow_ui_takes_the_web_session_and_its_writes_need_the_csrf_proof(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    with signed_in(live_server.url, tokens["dana"]) as (client, _):
        page = client.get("/mlflow/dev/", timeout=60)
        assert page.status_code == 200 and "static-files/" in page.text  # MLflow's own UI
        proof = client.cookies.get("mlflow-request-header-X-Mlgate-Csrf")
        assert proof
        create = "/mlflow/dev/ajax-api/2.0/mlflow/experiments/create"
        without = client.post(create, json={"name": "from-the-ui"})
        assert without.status_code == 403 and "CSRF" in mlflow_error(without)["message"]
        made = client.post(create, json={"name": "from-the-ui"}, headers={"X-Mlgate-Csrf": proof})
        assert made.status_code == 200, made.text
        # The session's rights are the token's: dana reads nothing of production.
        assert client.get("/mlflow/production/ajax-api/2.0/mlflow/experiments/search").status_code == 403
    with signed_in(live_server.url, tokens["vic"]) as (client, _):
        assert client.get("/mlflow/production/", timeout=60).status_code == 200
        proof = client.cookies.get("mlflow-request-header-X-Mlgate-Csrf")
        denied = client.post(
            "/mlflow/production/ajax-api/2.0/mlflow/registered-models/create",
            json={"name": "x"},
            headers={"X-Mlgate-Csrf": proof or ""},
        )
        assert denied.status_code == 403 and "written only by promotion" in mlflow_error(denied)["message"]
    # Not signed in: a browser is sent to sign in and back.
    away = httpx.get(f"{live_server.url}/mlflow/dev/", headers={"accept": "text/html"}, timeout=30)
    assert away.status_code == 303 and away.headers["location"].startswith("/signin?next=")
