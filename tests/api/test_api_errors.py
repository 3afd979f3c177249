"""The error envelope `{"error": {"code", "message", "details"}}` everywhere; never a 500 for bad input."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.support.project import Project, bearer

JSON = {"content-type": "application/json"}


def envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with the error envelope and code `code`; returns the error."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error["details"], dict), error
    return error


def fields_of(error: dict[str, Any]) -> list[str]:
    return [p["field"] for p in error["details"]["problems"]]


def admin(project: Project) -> dict[str, str]:
    return bearer(project.tokens["admin"])


# ---------------------------------------------------------------------------------------------------
# Bodies


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"name": "x",}',
        b"{'name': 'x'}",
        b"not json",
        b'{"name": "x"} trailing',
        b"\xff\xfe{}",
        b"[" * 5000,
    ],
)
def test_a_malformed_body_is_422_or_400_never_500(api: httpx.Client, project: Project, raw: bytes) -> None:
    response = api.post("/api/v1/users", content=raw, headers={**admin(project), **JSON})
    if response.status_code == 400:  # bytes that are not text at all
        envelope(response, 400, "bad_request")
        return
    error = envelope(response, 422, "invalid_input")
    assert fields_of(error) == ["body"]
    assert "JSON" in error["message"]


def test_malformed_json_names_the_body_and_where(api: httpx.Client, project: Project) -> None:
    response = api.post("/api/v1/me/tokens", content=b'{"name": }', headers={**admin(project), **JSON})
    error = envelope(response, 422, "invalid_input")
    assert error["details"]["problems"] == [
        {"field": "body", "problem": "invalid JSON at character 9: Expecting value"}
    ]
    assert error["message"] == "body: invalid JSON at character 9: Expecting value"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/users", {"name": "x", "roles": "x", "environments": ["dev"]}, "roles"),
        ("/api/v1/users", {"name": "x", "roles": ["viewer"], "environments": "dev"}, "environments"),
        ("/api/v1/users", {"name": 7, "roles": ["viewer"], "environments": ["dev"]}, "name"),
        ("/api/v1/users", {"roles": ["viewer"], "environments": ["dev"]}, "name"),
        ("/api/v1/users", {"name": "x", "roles": [1], "environments": ["dev"]}, "roles.0"),
        ("/api/v1/users", {"name": "x" * 65, "roles": ["viewer"], "environments": ["dev"]}, "name"),
        ("/api/v1/me/tokens", {"expires_in_days": "soon"}, "expires_in_days"),
        ("/api/v1/me/tokens", {"expires_in_days": [1]}, "expires_in_days"),
        ("/api/v1/me/tokens", {"name": ""}, "name"),
        ("/api/v1/me/tokens", {"name": None}, "name"),
        ("/api/v1/users/dana/roles", {"roles": "viewer", "environments": ["dev"]}, "roles"),
        ("/api/v1/users/dana/roles/revoke", {"environments": ["dev"]}, "roles"),
        ("/api/v1/users/dana/tokens", {"expires_in_days": {"days": 1}}, "expires_in_days"),
    ],
)
def test_wrong_types_are_422_naming_the_field(
    api: httpx.Client, project: Project, path: str, body: dict[str, Any], field: str
) -> None:
    error = envelope(api.post(path, json=body, headers=admin(project)), 422, "invalid_input")
    assert field in fields_of(error), error
    assert error["message"].startswith(f"{field}: ") or f"; {field}: " in error["message"], error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/users", {"name": "x", "roles": ["viewer"], "environments": ["dev"], "is_admin": True}),
        ("/api/v1/me/tokens", {"name": "x", "scope": "everything"}),
        ("/api/v1/users/dana/roles", {"roles": ["viewer"], "environments": ["dev"], "user": "vic"}),
        ("/api/v1/users/dana/tokens", {"token": "mlg_chosen_by_me"}),
    ],
)
def test_unknown_fields_are_refused(api: httpx.Client, project: Project, path: str, body: dict[str, Any]) -> None:
    error = envelope(api.post(path, json=body, headers=admin(project)), 422, "invalid_input")
    extra = next(iter(set(body) - {"name", "roles", "environments"}))
    assert fields_of(error) == [extra]
    assert extra in error["message"]


def test_a_body_that_is_not_an_object_is_refused(api: httpx.Client, project: Project) -> None:
    for raw in (b"[]", b'"x"', b"1", b"null"):
        response = api.post("/api/v1/me/tokens", content=raw, headers={**admin(project), **JSON})
        envelope(response, 422, "invalid_input")
    # A JSON body sent as something else is not read as JSON.
    response = api.post("/api/v1/me/tokens", content=b"{}", headers={**admin(project), "content-type": "text/plain"})
    envelope(response, 422, "invalid_input")


# ---------------------------------------------------------------------------------------------------
# Routes and methods


@pytest.mark.parametrize("path", ["/nope", "/api/v1", "/api/v2/whoami", "/api/v1/users/dana/nothing"])
def test_unknown_routes_are_404_envelopes(api: httpx.Client, project: Project, path: str) -> None:
    envelope(api.get(path), 404, "not_found")
    envelope(api.get(path, headers=admin(project)), 404, "not_found")


def test_the_door_without_an_environment_is_404_in_mlflows_shape(api: httpx.Client) -> None:
    for path in ("/mlflow", "/mlflow/"):
        response = api.get(path)
        assert response.status_code == 404
        assert (
            response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST" and "dev, staging" in response.json()["message"]
        )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v1/whoami"),
        ("DELETE", "/api/v1/health"),
        ("POST", "/api/v1/audit/verify"),
        ("PATCH", "/api/v1/users"),
        ("DELETE", "/api/v1/users/dana"),
        ("GET", "/api/v1/tokens/1"),
        ("POST", "/api/v1/environments/dev"),
    ],
)
def test_wrong_methods_are_405_envelopes(api: httpx.Client, project: Project, method: str, path: str) -> None:
    error = envelope(api.request(method, path, headers=admin(project)), 405, "method_not_allowed")
    assert "Method Not Allowed" in error["message"]


def test_an_unknown_environment_is_404_naming_the_known_ones(api: httpx.Client, project: Project) -> None:
    for headers in (admin(project), bearer(project.tokens["vic"])):
        error = envelope(api.get("/api/v1/environments/qa", headers=headers), 404, "not_found")
        assert "'qa'" in error["message"] and "dev, staging, production" in error["message"]
        assert error["details"] == {"environment": "qa", "known": ["dev", "staging", "production"]}
    # The same through the MLflow door, for reads and writes.
    for method in ("GET", "POST"):
        response = api.request(
            method,
            "/mlflow/qa/api/2.0/mlflow/experiments/search",
            json={},
            headers=bearer(project.tokens["dana"]),
        )
        assert response.status_code == 404  # in MLflow's shape, which MLflow clients raise as their own
        assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert "dev, staging, production" in response.json()["message"]
    # Who is not signed in learns nothing about environments.
    envelope(api.get("/api/v1/environments/qa"), 401, "unauthenticated")
    unknown = api.post("/mlflow/qa/api/2.0/mlflow/runs/create", json={})
    assert unknown.status_code == 401 and unknown.json()["error_code"] == "UNAUTHENTICATED"


# ---------------------------------------------------------------------------------------------------
# Public routes


def test_the_openapi_document_is_public_and_lists_the_api(api: httpx.Client) -> None:
    response = api.get("/api/v1/openapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["info"]["title"] == "mlgate"
    paths = set(document["paths"])
    assert {
        "/api/v1/health",
        "/api/v1/whoami",
        "/api/v1/environments",
        "/api/v1/environments/{env}",
        "/api/v1/users",
        "/api/v1/users/{name}",
        "/api/v1/users/{name}/roles",
        "/api/v1/users/{name}/tokens",
        "/api/v1/tokens",
        "/api/v1/tokens/{token_id}",
        "/api/v1/me/tokens",
        "/api/v1/me/tokens/{token_id}",
        "/api/v1/audit",
        "/api/v1/audit/verify",
    } <= paths
    assert all(p.startswith("/api/v1/") for p in paths), paths  # the MLflow door is not part of it
    assert "post" in document["paths"]["/api/v1/users"] and "get" in document["paths"]["/api/v1/users"]
    # The framework's own documentation routes are off: the only document is this one.
    for path in ("/openapi.json", "/docs", "/redoc"):
        envelope(api.get(path), 404, "not_found")


def test_health_is_public(api: httpx.Client) -> None:
    response = api.get("/api/v1/health")
    assert response.status_code == 200, response.text
    # Anonymous callers learn whether it is up, nothing about where the internal services run.
    assert response.json() == {"status": "ok"}
    # A bad credential does not break a public route either.
    assert api.get("/api/v1/health", headers={"Authorization": "Bearer nonsense"}).status_code == 200


# ---------------------------------------------------------------------------------------------------
# A broad sweep: nothing a caller sends makes the server fail


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bad_requests(project: Project) -> list[tuple[str, str, dict[str, Any]]]:
    a = admin(project)
    dana = bearer(project.tokens["dana"])
    return [
        # path parameters
        ("DELETE", "/api/v1/tokens/abc", {"headers": a}),
        ("DELETE", "/api/v1/tokens/-1", {"headers": a}),
        ("DELETE", "/api/v1/tokens/0", {"headers": a}),
        ("DELETE", "/api/v1/tokens/1.5", {"headers": a}),
        ("DELETE", "/api/v1/tokens/99999999999999999999999", {"headers": a}),
        ("DELETE", "/api/v1/tokens/9223372036854775808", {"headers": a}),
        ("DELETE", "/api/v1/me/tokens/99999999999999999999999", {"headers": dana}),
        ("DELETE", "/api/v1/me/tokens/2147483648", {"headers": dana}),
        ("GET", "/api/v1/users/%00", {"headers": a}),
        ("GET", "/api/v1/users/" + "x" * 5000, {"headers": a}),
        ("GET", "/api/v1/users/%E2%98%83", {"headers": a}),
        ("GET", "/api/v1/environments/%00", {"headers": a}),
        ("GET", "/api/v1/environments/" + "e" * 5000, {"headers": a}),
        (
            "POST",
            "/api/v1/users/%00/roles",
            {"headers": a, "json": {"roles": ["viewer"], "environments": ["dev"]}},
        ),
        ("POST", "/api/v1/users/nobody/tokens", {"headers": a, "json": {}}),
        # query parameters
        ("GET", "/api/v1/audit?limit=0", {"headers": a}),
        ("GET", "/api/v1/audit?limit=-5", {"headers": a}),
        ("GET", "/api/v1/audit?limit=99999999999999999999999", {"headers": a}),
        ("GET", "/api/v1/audit?limit=ten", {"headers": a}),
        ("GET", "/api/v1/audit?since=yesterday", {"headers": a}),
        ("GET", "/api/v1/audit?since=2024-13-45", {"headers": a}),
        ("GET", "/api/v1/audit?since=2024-01-01T00:00:00%2B05:00", {"headers": a}),
        ("GET", "/api/v1/audit?since=2024-01-01T00:00:00", {"headers": a}),
        ("GET", "/api/v1/audit?actor=%00&action=%25&environment=" + "z" * 3000, {"headers": a}),
        ("GET", "/api/v1/tokens?user=nobody", {"headers": a}),
        ("GET", "/api/v1/tokens?user=%00", {"headers": a}),
        # bodies
        (
            "POST",
            "/api/v1/users",
            {"headers": a, "json": {"name": "x\u0000y", "roles": ["viewer"], "environments": ["dev"]}},
        ),
        (
            "POST",
            "/api/v1/users",
            {"headers": a, "json": {"name": "ok", "roles": ["viewer"] * 1000, "environments": ["*"]}},
        ),
        (
            "POST",
            "/api/v1/users",
            {"headers": a, "json": {"name": "ok2", "roles": ["viewer"], "environments": ["dev", "dev"]}},
        ),
        ("POST", "/api/v1/users", {"headers": a, "json": {"name": "ok3", "roles": ["admin", "admin"]}}),
        (
            "POST",
            "/api/v1/users",
            {"headers": a, "json": {"name": "ok4", "roles": ["viewer"], "environments": ["*", "dev"]}},
        ),
        (
            "POST",
            "/api/v1/users",
            {
                "headers": a,
                "json": {
                    "name": "e",
                    "roles": ["viewer"],
                    "environments": ["dev"],
                    "email": "a@" + "b" * 300,
                },
            },
        ),
        (
            "POST",
            "/api/v1/users",
            {"headers": a, "json": {"name": "f", "roles": ["viewer"], "environments": [None]}},
        ),
        (
            "POST",
            "/api/v1/users",
            {"headers": a, "json": {"name": "g", "roles": [["viewer"]], "environments": ["dev"]}},
        ),
        ("POST", "/api/v1/me/tokens", {"headers": a, "json": {"expires_in_days": 1e-300}}),
        ("POST", "/api/v1/me/tokens", {"headers": a, "json": {"expires_in_days": 1e308}}),
        ("POST", "/api/v1/me/tokens", {"headers": a, "content": b'{"expires_in_days": NaN}', "extra": JSON}),
        (
            "POST",
            "/api/v1/me/tokens",
            {"headers": a, "content": b'{"expires_in_days": Infinity}', "extra": JSON},
        ),
        (
            "POST",
            "/api/v1/me/tokens",
            {"headers": a, "content": b'{"expires_in_days": -Infinity}', "extra": JSON},
        ),
        ("POST", "/api/v1/me/tokens", {"headers": a, "json": {"name": "n" * 65}}),
        ("POST", "/api/v1/me/tokens", {"headers": a, "content": b"\x00\x01\x02", "extra": JSON}),
        (
            "POST",
            "/api/v1/me/tokens",
            {"headers": a, "content": b"a=b", "extra": {"content-type": "application/x-www-form-urlencoded"}},
        ),
        (
            "POST",
            "/api/v1/me/tokens",
            {"headers": a, "content": b"--x--", "extra": {"content-type": "multipart/form-data; boundary=x"}},
        ),
        (
            "POST",
            "/api/v1/me/tokens",
            {"headers": a, "content": b"{}", "extra": {"content-type": "application/json; charset=latin-1"}},
        ),
        (
            "POST",
            "/api/v1/users/dana/roles",
            {"headers": a, "json": {"roles": ["viewer"], "environments": ["*", "qa"]}},
        ),
        (
            "POST",
            "/api/v1/users/system/roles/revoke",
            {"headers": a, "json": {"roles": ["viewer"], "environments": ["dev"]}},
        ),
        (
            "POST",
            "/api/v1/users/nobody/roles/revoke",
            {"headers": a, "json": {"roles": ["viewer"], "environments": ["dev"]}},
        ),
        # credentials
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": "Bearer"}}),
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": "Bearer  "}}),
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": "Bearer mlg_"}}),
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": "Bearer mlg_" + "x" * 10_000}}),
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": "Basic"}}),
        (
            "GET",
            "/api/v1/whoami",
            {"headers": {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}},
        ),
        (
            "GET",
            "/api/v1/whoami",
            {"headers": {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}},
        ),
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": _basic("", "")}}),
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": "Negotiate abc"}}),
        ("GET", "/api/v1/whoami", {"headers": {"Authorization": "bearer " + project.tokens["dana"]}}),
        # the MLflow door
        ("GET", "/mlflow/dev", {"headers": dana}),
        ("GET", "/mlflow/%00/x", {"headers": dana}),
        ("GET", "/mlflow/DEV/api/2.0/mlflow/experiments/search", {"headers": dana}),
        (
            "POST",
            "/mlflow/dev/api/2.0/mlflow/runs/create",
            {"headers": dana, "content": b"not json", "extra": JSON},
        ),
        (
            "POST",
            "/mlflow/dev/api/2.0/mlflow/runs/create",
            {"headers": dana, "content": b"[1, 2]", "extra": JSON},
        ),
        ("POST", "/mlflow/dev/api/2.0/mlflow/runs/create", {"headers": dana, "json": {"tags": "not a list"}}),
        (
            "POST",
            "/mlflow/dev/api/2.0/mlflow/runs/create",
            {"headers": dana, "json": {"tags": [1, None, {"key": "x"}]}},
        ),
        ("OPTIONS", "/mlflow/dev/api/2.0/mlflow/experiments/search", {"headers": dana}),
        ("TRACE", "/api/v1/whoami", {"headers": dana}),
    ]


def test_no_bad_input_ever_gets_a_500(api: httpx.Client, project: Project) -> None:
    failures = []
    statuses = set()
    for method, path, options in bad_requests(project):
        headers = {**options.get("headers", {}), **options.get("extra", {})}
        kwargs: dict[str, Any] = {"headers": headers}
        if "json" in options:
            kwargs["json"] = options["json"]
        if "content" in options:
            kwargs["content"] = options["content"]
        response = api.request(method, path, **kwargs)
        statuses.add(response.status_code)
        where = f"{method} {path[:80]} {str(options.get('json', options.get('content', '')))[:80]}"
        # The door's fake tracking server never answers: a 503 from a door request that got through is fine.
        door = response.request.url.path.startswith("/mlflow/")
        proxied = door and response.status_code == 503
        if response.status_code >= 500 and not proxied:
            failures.append(f"{where}: {response.status_code} {response.text[:300]}")
            continue
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                failures.append(f"{where}: {response.status_code} without a JSON body: {response.text[:200]}")
                continue
            if door:  # the door answers in MLflow's shape
                if set(body) != {"error_code", "message"}:
                    failures.append(f"{where}: {response.status_code} not in MLflow's shape: {body}")
                continue
            if set(body) != {"error"} or set(body["error"]) != {"code", "message", "details"}:
                failures.append(f"{where}: {response.status_code} not in the envelope: {body}")
    assert not failures, "\n".join(failures)
    assert {401, 404, 405, 422} <= statuses, statuses


def test_huge_token_ids_are_invalid_input(api: httpx.Client, project: Project) -> None:
    """Ids past what an integer key holds are a 422 naming the field, not a database error."""
    for path in ("/api/v1/tokens/99999999999999999999999", "/api/v1/tokens/2147483648", "/api/v1/tokens/0"):
        error = envelope(api.delete(path, headers=admin(project)), 422, "invalid_input")
        assert fields_of(error) == ["token_id"]
    envelope(api.delete("/api/v1/tokens/2147483647", headers=admin(project)), 404, "not_found")


# Every integer a route takes in its path or query, with the field its 422 names.
HUGE = 2**63  # past any integer column
ID_ROUTES = [
    ("GET", "/api/v1/environments/dev/jobs/{n}", "job_id"),
    ("GET", "/api/v1/environments/dev/jobs/{n}/logs", "job_id"),
    ("POST", "/api/v1/environments/dev/jobs/{n}/cancel", "job_id"),
    ("GET", "/api/v1/environments/staging/requests/{n}", "request_id"),
    ("POST", "/api/v1/environments/staging/requests/{n}/approve", "request_id"),
    ("POST", "/api/v1/environments/staging/requests/{n}/reject", "request_id"),
    ("GET", "/api/v1/requests/{n}/location", "request_id"),
    ("GET", "/api/v1/environments/production/rollouts/{n}", "rollout_id"),
    ("GET", "/api/v1/environments/dev/models/risk/versions/{n}", "version"),
    ("GET", "/api/v1/environments/staging/models/risk/versions/{n}/checks", "version"),
    ("POST", "/api/v1/inbox/{n}/read", "notification_id"),
    ("GET", "/api/v1/notifications?request_id={n}", "request_id"),
]


ACTOR_OF = {"cancel": "dana", "approve": "lee", "reject": "lee"}  # who may; the admin may not train or decide


@pytest.mark.parametrize("n", [HUGE, 2**31, 0])
def test_ids_out_of_range_are_invalid_input_naming_the_field(api: httpx.Client, project: Project, n: int) -> None:
    for method, path, field in ID_ROUTES:
        who = project.tokens[ACTOR_OF.get(path.rsplit("/", 1)[-1], "admin")]
        answer = api.request(method, path.format(n=n), headers=bearer(who), json={"comment": "x"})
        error = envelope(answer, 422, "invalid_input")
        assert fields_of(error) == [field], (path, error)


def test_offsets_and_data_versions_out_of_range_are_invalid_input(api: httpx.Client, project: Project) -> None:
    log = api.get(f"/api/v1/environments/dev/jobs/1/logs?offset={HUGE}", headers=admin(project))
    assert fields_of(envelope(log, 422, "invalid_input")) == ["offset"]
    data = api.get(f"/api/v1/environments/dev/data/patients@{HUGE}", headers=admin(project))
    assert "out of range" in envelope(data, 422, "invalid_input")["message"]


def test_web_pages_for_ids_out_of_range_are_not_found(api: httpx.Client, project: Project) -> None:
    page = api.get("/signin")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    form = {"csrf": csrf, "token": project.tokens["admin"], "next": "/"}
    signed = api.post("/signin", data=form, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    for path in (f"/requests/{HUGE}", f"/models/dev/risk/{HUGE}", f"/jobs/dev/{HUGE}"):
        answer = api.get(path)
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:300])
