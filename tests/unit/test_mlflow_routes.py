"""The door's MLflow route table is exactly the installed MLflow's routes, and `resolve` reads paths as MLflow does.

Every (method, route) MLflow registers (its Flask app, and the FastAPI routes its ASGI app serves ahead of
the Flask mount) is classified by `mlflow_operations.ROUTES`, and every line of the table is such a route:
an MLflow upgrade that adds, moves or drops a route fails here, listing what to classify. Then: each route
resolves to its own line (none shadows another), paths that could be read two ways are refused, and the
table's flags (audit, guards, streams, reasons) sit where the door relies on them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from starlette.routing import Mount

from mlgate.domain.mlflow_operations import (
    API,
    ARTIFACT_LIMIT,
    DENIALS,
    JSON_LIMIT,
    SMALL_LIMIT,
    Body,
    Kind,
    NotAllowed,
    Operation,
    PathRefused,
    resolve,
    table,
)
from mlgate.interfaces.api.door import guards

Route = tuple[str, str]  # (method, path in MLflow's Flask syntax)
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # the resolver treats HEAD as GET; OPTIONS is never forwarded
A2 = "/api/2.0/mlflow"
A3 = "/api/3.0/mlflow"


def _flask_syntax(path: str) -> str:
    """FastAPI's `{x:path}` and `{x}` written as Flask's `<path:x>` and `<x>`."""
    return re.sub(r"\{(\w+)\}", r"<\1>", re.sub(r"\{(\w+):path\}", r"<path:\1>", path))


def _asgi_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[Route]:
    """The routes a FastAPI app (or router) serves, each under the prefix it is included at. Recent FastAPI
    keeps an included router whole (`original_router`, `include_context.prefix`); older ones copy its routes."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _asgi_routes(included.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount) and route.path == "":
            continue  # the Flask app, at "/": its routes are read from its own url_map
        else:  # a route without methods (a websocket) shows up as unclassified, as it should
            for method in set(getattr(route, "methods", None) or {type(route).__name__}) - IGNORED_METHODS:
                yield method, _flask_syntax(prefix + route.path)


@pytest.fixture(scope="module")
def mlflow_routes() -> frozenset[Route]:
    """Every (method, route) the installed MLflow's tracking server serves, as `mlflow server` builds it."""
    with pytest.MonkeyPatch.context() as env, warnings.catch_warnings():
        env.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        warnings.simplefilter("ignore")  # starlette's WSGI middleware, which MLflow uses, is deprecated
        from mlflow.server import app as flask_app
        from mlflow.server.fastapi_app import app as asgi_app  # what `mlflow server` runs under uvicorn
    flask = {
        (method, rule.rule)
        for rule in flask_app.url_map.iter_rules()
        for method in (rule.methods or set()) - IGNORED_METHODS
    }
    return frozenset(flask | set(_asgi_routes(asgi_app.routes)))


def _paths(pattern: str) -> list[str]:
    rest = pattern.removeprefix(API)
    return ["/api" + rest, "/ajax-api" + rest] if pattern.startswith(API) else [pattern]


def _classified() -> dict[Route, Operation]:
    return {(op.method, path): op for op in table().operations for path in _paths(op.pattern)}


def _listing(routes: Iterable[Route]) -> str:
    return "\n".join(f"  {method:6} {path}" for method, path in sorted(routes, key=lambda r: (r[1], r[0])))


def test_every_route_mlflow_registers_is_classified(mlflow_routes: frozenset[Route]) -> None:
    unclassified = mlflow_routes - _classified().keys()
    assert not unclassified, (
        f"{len(unclassified)} route(s) of the installed MLflow are not in mlflow_operations.ROUTES; classify each "
        f"(read, write with its flags, or denied with its reason):\n{_listing(unclassified)}"
    )


def test_every_table_line_is_a_route_mlflow_registers(mlflow_routes: frozenset[Route]) -> None:
    stale = _classified().keys() - mlflow_routes
    assert not stale, f"mlflow_operations.ROUTES classifies routes MLflow does not register:\n{_listing(stale)}"


def _sample(pattern: str) -> str:
    """A request path for the route: `p1` for each segment parameter, `p1/p2` for each path parameter."""
    return re.sub(r"<(\w+)>", "p1", re.sub(r"<path:(\w+)>", "p1/p2", pattern))


def test_each_route_resolves_to_its_own_line() -> None:
    shadowed = []
    for (method, path), operation in _classified().items():
        resolved = resolve(method, _sample(path)).operation
        if resolved is not operation:
            shadowed.append(f"{method} {path} resolves to {resolved.method} {resolved.pattern}")
    assert shadowed == []


@pytest.mark.parametrize(
    ("method", "path", "kind", "name"),
    [
        ("GET", "/", Kind.READ, "ui"),
        ("GET", "/static-files/static/js/main.js", Kind.READ, "static-files"),
        ("POST", "/graphql", Kind.READ, "graphql"),
        ("GET", f"{A2}/runs/get", Kind.READ, "runs.get"),
        ("POST", f"{A2}/runs/search", Kind.READ, "runs.search"),
        ("POST", f"{A2}/registered-models/get-latest-versions", Kind.READ, "registered-models.get-latest-versions"),
        ("POST", f"{A3}/traces/search", Kind.READ, "traces.v3.search"),
        ("POST", f"{A2}/runs/create", Kind.WRITE, "runs.create"),
        ("POST", "/ajax-api/2.0/mlflow/runs/log-batch", Kind.WRITE, "runs.log-batch"),
        ("DELETE", f"{A2}/registered-models/delete", Kind.WRITE, "registered-models.delete"),
        ("POST", f"{A2}/registered-models/rename", Kind.WRITE, "registered-models.rename"),
        ("DELETE", f"{A2}/registered-models/alias", Kind.WRITE, "registered-models.alias.delete"),
        (
            "PUT",
            "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt",
            Kind.WRITE,
            "mlflow-artifacts.artifacts.put",
        ),
        ("POST", "/v1/traces", Kind.WRITE, "v1.traces"),
        ("POST", "/ajax-api/3.0/mlflow/assistant/message", Kind.DENIED, "assistant.message"),
        ("POST", "/gateway/my-endpoint/mlflow/invocations", Kind.DENIED, "gateway.mlflow.invocations"),
        ("POST", f"{A2}/webhooks", Kind.DENIED, "webhooks"),
        ("GET", f"{A3}/mcp-servers/team/tools/versions/2", Kind.DENIED, "mcp-servers.versions"),
        ("POST", f"{A3}/scorers/register", Kind.DENIED, "scorers.register"),
        ("POST", "/ajax-api/3.0/jobs/", Kind.DENIED, "jobs"),
    ],
)
def test_routes_resolve_to_their_kind(method: str, path: str, kind: Kind, name: str) -> None:
    operation = resolve(method, path).operation
    assert (operation.kind, operation.name) == (kind, name)


def test_an_encoded_question_mark_is_refused() -> None:
    with pytest.raises(PathRefused):
        resolve("POST", f"{A2}/runs/create%3F/search")


def test_an_encoded_slash_resolves_to_the_route_it_decodes_to() -> None:
    """The upstream routes on the decoded path too, so `runs%2Fcreate` is runs/create at both ends."""
    resolved = resolve("POST", f"{A2}/runs%2Fcreate")
    assert resolved.operation.name == "runs.create"
    assert resolved.path == f"{A2}/runs/create"
    assert resolve("POST", f"{A2}/runs%2fcreate").operation is resolved.operation


@pytest.mark.parametrize(
    "raw",
    [
        f"{A2}/runs%252Fcreate",  # a double encoding: decoded once here, maybe twice elsewhere
        f"{A2}/runs/create%00",
        f"{A2}/runs/create%0A",
        f"{A2}/experiments/../runs/create",
        f"{A2}/experiments/%2E%2E/runs/create",
        f"{A2}/./runs/create",
        f"{A2}//runs/create",
        f"{A2}/runs%2F%2Fcreate",
        f"{A2}/runs/create;x=1",
        f"{A2}/runs/create%3Bx=1",
        f"{A2}/runs\\create",
        f"{A2}/runs%5Ccreate",
        f"{A2}/runs/create#x",
        f"{A2}/runs/create%23x",
        f"{A2}/runs/cr\u00e9ate",
        f"{A2}/runs/cr%FFate",
    ],
)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(PathRefused):
        resolve("POST", raw)


def test_an_unknown_route_is_not_allowed_and_says_what_was_asked() -> None:
    with pytest.raises(NotAllowed, match=re.escape(f"'PUT {A2}/runs/create'")):
        resolve("PUT", f"{A2}/runs/create")
    with pytest.raises(NotAllowed, match=re.escape(f"GET {A2}/runs/get/")):
        resolve("GET", f"{A2}/runs/get/")  # MLflow redirects a trailing slash; the door does not guess
    with pytest.raises(NotAllowed):
        resolve("GET", "/api/2.0/mlflow/no-such-thing")


def test_head_resolves_like_get() -> None:
    assert resolve("HEAD", f"{A2}/runs/get").operation is resolve("GET", f"{A2}/runs/get").operation
    with pytest.raises(NotAllowed):
        resolve("HEAD", f"{A2}/runs/create")


def test_route_parameters_are_extracted_decoded() -> None:
    resolved = resolve("PATCH", f"{A2}/logged-models/m-0a1b%2D2")
    assert (resolved.operation.name, resolved.params) == ("logged-models.update", {"model_id": "m-0a1b-2"})
    tag = resolve("DELETE", f"{A2}/logged-models/m-1/tags/team%20name")
    assert tag.params == {"model_id": "m-1", "tag_key": "team name"}
    artifact = resolve("PUT", "/ajax-api/2.0/mlflow-artifacts/artifacts/1/models/m-1/artifacts/MLmodel")
    assert artifact.params == {"artifact_path": "1/models/m-1/artifacts/MLmodel"}
    assert artifact.operation.body is Body.STREAM and artifact.operation.limit == ARTIFACT_LIMIT
    assert resolve("GET", f"{A2}/runs/get").params == {}


def _lines(kind: Kind | None = None) -> list[Operation]:
    return [op for op in table().operations if kind is None or op.kind is kind]


AUDITED = {
    *(f"experiments.{verb}" for verb in ("create", "delete", "restore", "update")),
    *(f"runs.{verb}" for verb in ("create", "delete", "restore")),
    *(f"registered-models.{verb}" for verb in ("create", "rename", "delete", "alias.set", "alias.delete")),
    *(f"model-versions.{verb}" for verb in ("create", "delete", "transition-stage")),
    *(f"logged-models.{verb}" for verb in ("create", "delete")),
    *(f"datasets.{verb}" for verb in ("create", "delete")),
    "mlflow-artifacts.artifacts.delete",
    "traces.delete-traces",
    "traces.v3.delete-traces",
}


def test_audited_operations_are_writes_with_distinct_names() -> None:
    audited = [op for op in _lines() if op.audited]
    assert [op.name for op in audited if op.kind is not Kind.WRITE] == []
    names = [op.name for op in audited]
    assert sorted({n for n in names if names.count(n) > 1}) == []
    assert set(names) == AUDITED


def test_only_the_ui_page_is_named_ui() -> None:
    """The door hands the MLflow UI's page the session's CSRF cookie by this name."""
    assert [(op.method, op.pattern) for op in _lines() if op.name == "ui"] == [("GET", "/")]


TAG_WRITES = {
    ("POST", f"{API}/2.0/mlflow/{route}")
    for route in [
        "runs/set-tag",
        "runs/delete-tag",
        "runs/log-batch",
        "experiments/create",
        "experiments/set-experiment-tag",
        "experiments/delete-experiment-tag",
        "registered-models/create",
        "registered-models/set-tag",
        "model-versions/set-tag",
        "logged-models",
        "traces",
    ]
} | {
    ("DELETE", f"{API}/2.0/mlflow/registered-models/delete-tag"),
    ("DELETE", f"{API}/2.0/mlflow/model-versions/delete-tag"),
    ("PATCH", f"{API}/2.0/mlflow/logged-models/<model_id>/tags"),
    ("DELETE", f"{API}/2.0/mlflow/logged-models/<model_id>/tags/<tag_key>"),
    ("PATCH", f"{API}/2.0/mlflow/traces/<request_id>"),  # EndTrace carries tags too
    ("PATCH", f"{API}/2.0/mlflow/traces/<request_id>/tags"),
    ("DELETE", f"{API}/2.0/mlflow/traces/<request_id>/tags"),
    ("POST", f"{API}/3.0/mlflow/traces"),
    ("PATCH", f"{API}/3.0/mlflow/traces/<trace_id>/tags"),
    ("DELETE", f"{API}/3.0/mlflow/traces/<trace_id>/tags"),
    ("POST", f"{API}/3.0/mlflow/datasets/create"),
    ("PATCH", f"{API}/3.0/mlflow/datasets/<dataset_id>/tags"),
    ("DELETE", f"{API}/3.0/mlflow/datasets/<dataset_id>/tags/<key>"),
}
ARTIFACT_WRITES = {
    ("PUT", f"{API}/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
    ("DELETE", f"{API}/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
    *(
        ("POST", f"{API}/2.0/mlflow-artifacts/mpu/{step}/<path:artifact_path>")
        for step in ("create", "complete", "abort")
    ),
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
    ("POST", f"{API}/2.0/mlflow/runs/log-model"),
}
GUARDED = {
    "run-create": {("POST", f"{API}/2.0/mlflow/runs/create")},
    "run-delete": {("POST", f"{API}/2.0/mlflow/runs/delete")},
    "version-create": {("POST", f"{API}/2.0/mlflow/model-versions/create")},
    "version-delete": {("DELETE", f"{API}/2.0/mlflow/model-versions/delete")},
    "model-write": {
        ("DELETE", f"{API}/2.0/mlflow/registered-models/delete"),
        ("POST", f"{API}/2.0/mlflow/registered-models/rename"),
    },
    "logged-model-write": {
        ("PATCH", f"{API}/2.0/mlflow/logged-models/<model_id>"),
        ("DELETE", f"{API}/2.0/mlflow/logged-models/<model_id>"),
    },
    "artifact-write": ARTIFACT_WRITES,
    "tags": TAG_WRITES,
}


def test_guards_sit_on_the_writes_the_door_guards() -> None:
    found: dict[str, set[Route]] = {}
    for op in _lines():
        if op.guard is not None:
            found.setdefault(op.guard, set()).add((op.method, op.pattern))
    assert found == GUARDED
    assert [op.name for op in _lines() if op.guard and op.kind is not Kind.WRITE] == []
    assert set(found) <= {*guards.GUARDS, "version-create"}  # the door registers a version itself


def test_streamed_bodies_are_the_artifact_files() -> None:
    streamed = {(op.method, op.pattern) for op in _lines() if op.body is Body.STREAM}
    assert {route for route in streamed if route[0] != "GET"} == {
        ("PUT", f"{API}/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
        ("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
    }
    downloads = {route for route in streamed if route[0] == "GET"}
    assert {op.name for op in _lines() if (op.method, op.pattern) in downloads} == {
        "mlflow-artifacts.artifacts",
        "get-artifact",
        "model-versions.get-artifact",
        "get-trace-artifact",
        "logged-models.artifacts.files",
    }
    assert {op.limit for op in _lines() if op.body is Body.STREAM} == {ARTIFACT_LIMIT}
    small = {(op.method, op.pattern) for op in _lines() if op.limit == SMALL_LIMIT}
    assert small == {("GET", "/graphql"), ("POST", "/graphql"), ("POST", "/v1/traces")}
    assert {op.limit for op in _lines() if op.body is Body.JSON and (op.method, op.pattern) not in small} == {
        JSON_LIMIT
    }


def test_denied_lines_name_their_reason_and_every_reason_is_used() -> None:
    denied = _lines(Kind.DENIED)
    assert [op.name for op in denied if op.denial not in DENIALS.values()] == []
    assert [op.name for op in _lines() if op.kind is not Kind.DENIED and op.denial is not None] == []
    assert {op.denial for op in denied} == set(DENIALS.values())
    assert [op.name for op in denied if op.audited or op.guard or op.body is Body.STREAM] == []
