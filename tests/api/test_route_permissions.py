"""The route walker: every API route declares exactly one Permission, and the table holds over HTTP.

The expected table is transcribed by hand from ARCHITECTURE.md ("Who may do what") for the default
environments (dev, staging, production), checked against `mlgate.domain.permissions`, and then every
route x method x environment x role is sent through the real app.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from mlgate.domain.permissions import (
    GLOBAL_PERMISSIONS,
    PERMISSIONS,
    Action,
    Role,
    allowed_roles,
)
from mlgate.interfaces.api.deps import Permission
from mlgate.interfaces.api.prometheus import ScrapeRoute
from mlgate.interfaces.api.routes.mlflow_door import Door
from mlgate.interfaces.web.core import WebRoute
from mlgate.services.identity import accounts
from tests.support.project import Project, bearer

ENVS = ("dev", "staging", "production")
KINDS = {"dev": "development", "staging": "staging", "production": "production"}
ROLES = ("viewer", "data-scientist", "lead-data-scientist", "software-developer", "operator")
ADMIN = "admin"
EVERY_ROLE = frozenset({*ROLES, ADMIN})

V, DS, LDS, SD, OP = ROLES

# ARCHITECTURE.md, "Who may do what", for the default environments. An environment missing from an
# action's row means no role may take that action there. Admin is bound to '*' (every environment),
# so "any role bound to the environment" includes it.
EXPECTED: dict[str, dict[str, frozenset[str]]] = {
    # read (models, runs, requests, endpoints, monitors, jobs): any role bound to the environment
    "read": {"dev": EVERY_ROLE, "staging": EVERY_ROLE, "production": EVERY_ROLE},
    # train, log runs, register models (`dev` only)
    "train": {"dev": frozenset({DS, LDS})},
    # register data assets: training data in dev; held-out evaluation data in staging (the lead's)
    "register-data": {"dev": frozenset({DS, LDS}), "staging": frozenset({LDS})},
    # open a promotion request out of an environment
    "request-promotion": {"dev": frozenset({DS, LDS}), "staging": frozenset({LDS, SD})},
    # approve or reject a gate into an environment (the default gate roles)
    "decide-gate": {"staging": frozenset({LDS}), "production": frozenset({SD})},
    # run checks (`staging`)
    "run-checks": {"staging": frozenset({LDS, SD, OP})},
    # create endpoints, deploy, shift traffic, roll back, rotate keys: operator; also SD in staging
    "deploy": {"dev": frozenset({OP}), "staging": frozenset({OP, SD}), "production": frozenset({OP})},
    # manage monitors, send ground truth in bulk: operator
    "manage-monitors": {"dev": frozenset({OP}), "staging": frozenset({OP}), "production": frozenset({OP})},
}
# Not about one environment: manage users, tokens, audit verify.
EXPECTED_GLOBAL: dict[str, frozenset[str]] = {"administer": frozenset({ADMIN})}
# Need no table: PUBLIC needs nothing, AUTHENTICATED any principal acting on itself.
NO_TABLE = {"public", "authenticated"}

# Routes whose action is pinned here, so a route quietly re-declared with a looser action fails.
PINNED: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/health"): "public",
    ("GET", "/api/v1/openapi.json"): "public",
    ("GET", "/api/v1/whoami"): "authenticated",
    ("GET", "/api/v1/environments"): "authenticated",
    ("GET", "/api/v1/environments/{env}"): "read",
    ("GET", "/api/v1/users"): "administer",
    ("POST", "/api/v1/users"): "administer",
    ("GET", "/api/v1/users/{name}"): "administer",
    ("POST", "/api/v1/users/{name}/roles"): "administer",
    ("POST", "/api/v1/users/{name}/roles/revoke"): "administer",
    ("GET", "/api/v1/tokens"): "administer",
    ("POST", "/api/v1/users/{name}/tokens"): "administer",
    ("DELETE", "/api/v1/tokens/{token_id}"): "administer",
    ("GET", "/api/v1/me/tokens"): "authenticated",
    ("POST", "/api/v1/me/tokens"): "authenticated",
    ("DELETE", "/api/v1/me/tokens/{token_id}"): "authenticated",
    ("GET", "/api/v1/audit"): "administer",
    ("GET", "/api/v1/audit/verify"): "administer",
    ("GET", "/api/v1/audit/at"): "administer",
    ("GET", "/api/v1/workers"): "administer",
    ("POST", "/api/v1/environments/{env}/models"): "train",
    ("GET", "/api/v1/environments/{env}/models"): "read",
    ("GET", "/api/v1/environments/{env}/models/{name}/versions/{version}"): "read",
    ("DELETE", "/api/v1/environments/{env}/models/{name}/versions/{version}"): "train",
    ("POST", "/api/v1/environments/{env}/models/{name}/versions/{version}/checks"): "run-checks",
    ("GET", "/api/v1/environments/{env}/models/{name}/versions/{version}/checks"): "read",
    ("GET", "/api/v1/notifications"): "administer",
    ("GET", "/api/v1/inbox"): "authenticated",
    ("POST", "/api/v1/inbox/{notification_id}/read"): "authenticated",
    ("GET", "/api/v1/environments/{env}/serving"): "read",
    ("GET", "/api/v1/environments/{env}/endpoints"): "read",
    ("POST", "/api/v1/environments/{env}/endpoints"): "deploy",
    ("GET", "/api/v1/environments/{env}/endpoints/{name}"): "read",
    ("POST", "/api/v1/environments/{env}/endpoints/{name}/deployments"): "deploy",
    ("PUT", "/api/v1/environments/{env}/endpoints/{name}/traffic"): "deploy",
    ("POST", "/api/v1/environments/{env}/endpoints/{name}/rollback"): "deploy",
    ("POST", "/api/v1/environments/{env}/endpoints/{name}/keys/{which}"): "deploy",
    ("POST", "/api/v1/environments/{env}/endpoints/{name}/invocations"): "read",
    ("GET", "/api/v1/environments/{env}/rollouts"): "read",
    ("GET", "/api/v1/environments/{env}/rollouts/{rollout_id}"): "read",
    ("GET", "/api/v1/environments/{env}/monitors"): "read",
    ("POST", "/api/v1/environments/{env}/monitors"): "manage-monitors",
    ("GET", "/api/v1/environments/{env}/monitors/{name}"): "read",
    ("POST", "/api/v1/environments/{env}/monitors/{name}/run"): "manage-monitors",
    ("GET", "/api/v1/environments/{env}/monitors/{name}/results"): "read",
    ("GET", "/api/v1/environments/{env}/monitors/{name}/alerts"): "read",
    ("POST", "/api/v1/environments/{env}/endpoints/{name}/feedback"): "manage-monitors",
}

DOOR = "/mlflow/{env}/{path:path}"
DOOR_READ = "api/2.0/mlflow/experiments/search"
# MLflow's own verbs for each write method; every one of them is a write through the door.
DOOR_WRITES = {
    "POST": "api/2.0/mlflow/runs/create",
    "PUT": "api/2.0/mlflow-artifacts/artifacts/1/upload.txt",
    "PATCH": "api/2.0/mlflow/registered-models/update",
    "DELETE": "api/2.0/mlflow/registered-models/delete",
}
MISSING_ID = 999_999  # an id no row has: an allowed DELETE must not revoke a token the walk relies on
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


@dataclass(frozen=True)
class Walker:
    """One caller of the walk: roles bound in some environments (or '*')."""

    name: str
    token: str
    roles: frozenset[str]
    environments: frozenset[str]

    def roles_in(self, env: str) -> frozenset[str]:
        return self.roles if (env in self.environments or "*" in self.environments) else frozenset()

    def may(self, action: str, env: str | None) -> bool:
        if action in NO_TABLE:
            return True
        if action in EXPECTED_GLOBAL:
            return "*" in self.environments and bool(self.roles & EXPECTED_GLOBAL[action])
        assert env is not None, f"'{action}' is about one environment"
        return bool(self.roles_in(env) & EXPECTED[action].get(env, frozenset()))


@dataclass(frozen=True)
class Call:
    """One request of the walk and the action it needs."""

    method: str
    url: str
    action: str
    env: str | None
    route: str
    door: bool

    def send(self, client: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"json": {}} if self.method in ("POST", "PUT", "PATCH", "DELETE") else {}
        return client.request(self.method, self.url, headers=headers or {}, **body)

    def __str__(self) -> str:
        return f"{self.method} {self.url} [{self.action}]"


# ---------------------------------------------------------------------------------------------------
# Finding the routes and their declared permissions


def route_contexts(app: FastAPI) -> tuple[list[RouteContext], list[str]]:
    """The API routes (through included routers), and a description of every other kind of route.

    The web UI's pages (WebRoute) are left out: they take a session cookie, not a bearer token, and
    answer with pages and redirects; tests/test_web_ui.py checks their rules. They stay off the API's
    paths, so this walk still sees every route a token reaches. So is Prometheus' `/metrics` (ScrapeRoute):
    it takes the metrics token alone and refuses every mlgate token (tests/api/test_prometheus.py)."""
    api_routes, strays = [], []
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        if isinstance(original, WebRoute):
            if context.path.startswith(("/api/", "/mlflow/")):
                strays.append(f"web page on an API path: {context.path}")
            continue
        if isinstance(original, APIRoute):
            api_routes.append(context)
        elif isinstance(original, Mount) and isinstance(original.app, (StaticFiles, Door)):
            continue  # static files; the MLflow door, walked by `door_calls`
        elif isinstance(original, ScrapeRoute) and context.path == "/metrics":
            continue  # Prometheus' scrape: the metrics token, no mlgate token (tests/api/test_prometheus.py)
        else:
            strays.append(f"{type(original).__name__} {context.path} {sorted(context.methods or [])}")
    return api_routes, strays


def declared_permissions(dependant: Dependant) -> Iterator[Permission]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Permission):
            yield dependency.call
        yield from declared_permissions(dependency)


def permission_of(context: RouteContext) -> Permission:
    permissions = list(declared_permissions(context.dependant))
    assert len(permissions) == 1, f"{sorted(context.methods or [])} {context.path}: {permissions}"
    return permissions[0]


def plan(context: RouteContext) -> list[Call]:
    """The requests that exercise one route: each method, and each environment where it has one."""
    permission = permission_of(context)
    path: str = context.path
    types = {p.name: p.field_info.annotation for p in context.dependant.path_params}
    assert type(permission) is Permission, (
        f"{path}: {type(permission).__name__} has no expectation in this test; teach it its semantics"
    )
    calls = []
    for method in sorted(context.methods or []):
        variants = [("", permission.action.value)]
        for door_path, action in variants:
            scoped = action not in NO_TABLE and action not in EXPECTED_GLOBAL
            if scoped:
                assert permission.env_param is not None, f"{path}: '{action}' needs an environment"
            for env in ENVS if scoped else (None,):
                values: dict[str, object] = {}
                query = ""
                for name in PARAM.findall(path):
                    if env is not None and name == permission.env_param:
                        values[name] = env
                    elif name == "path":
                        values[name] = door_path
                    elif types.get(name) is int:
                        values[name] = MISSING_ID
                    else:
                        values[name] = "nobody"
                if env is not None and permission.env_param not in values:
                    query = f"?{permission.env_param}={env}"
                url = PARAM.sub(lambda match: str(values[match.group(1)]), path) + query  # noqa: B023
                calls.append(Call(method, url, action, env, path, False))
    return calls


def door_calls() -> list[Call]:
    """The MLflow door's requests: a read and a write for each method MLflow uses, in each environment."""
    calls = []
    for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"):
        variants = [(DOOR_READ, "read")] if method in ("GET", "HEAD") else [(DOOR_WRITES[method], "train")]
        if method == "POST":
            variants.append((DOOR_READ, "read"))  # MLflow's search is a POST that only reads
        for door_path, action in variants:
            calls += [Call(method, f"/mlflow/{env}/{door_path}", action, env, DOOR, True) for env in ENVS]
    return calls


def all_calls(app: FastAPI) -> list[Call]:
    routes, _ = route_contexts(app)
    return [call for context in routes for call in plan(context)] + door_calls()


def make_walkers(project: Project) -> list[Walker]:
    """One user per role bound only to one environment, and the admin bound to '*'."""
    settings = project.settings
    walkers = [Walker("admin", project.tokens["admin"], frozenset({ADMIN}), frozenset({"*"}))]
    db = project.db()
    try:
        for role in ROLES:
            for env in ENVS:
                name = f"walk-{role}-{env}"
                bindings = accounts.parse_bindings([role], [env], settings.env_names)
                _, issued = accounts.create_user(db, actor="admin", name=name, bindings=bindings)
                walkers.append(Walker(name, issued.value, frozenset({role}), frozenset({env})))
    finally:
        db.dispose()
    return walkers


def app_of(client: httpx.Client) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[attr-defined]  # the fixture is a TestClient
    return app


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


# ---------------------------------------------------------------------------------------------------
# The table


def test_permission_table_is_the_one_in_architecture_md(project: Project) -> None:
    settings = project.settings
    assert {r.value for r in Role} == EVERY_ROLE
    assert {a.value for a in Action} == set(EXPECTED) | set(EXPECTED_GLOBAL) | NO_TABLE
    kinds = {env: settings.environment(env).kind for env in ENVS}
    assert {env: kind.value for env, kind in kinds.items()} == KINDS

    # PERMISSIONS itself, row by row: no extra kinds, no missing ones.
    table = {
        action.value: {env: {r.value for r in by_kind[kinds[env]]} for env in ENVS if kinds[env] in by_kind}
        for action, by_kind in PERMISSIONS.items()
    }
    expected = {action: {env: set(roles) for env, roles in row.items()} for action, row in EXPECTED.items()}
    assert {a: {e: r for e, r in row.items() if r} for a, row in table.items() if row} == {
        a: row for a, row in expected.items() if row
    }
    assert {a.value: {r.value for r in roles} for a, roles in GLOBAL_PERMISSIONS.items()} == {
        a: set(roles) for a, roles in EXPECTED_GLOBAL.items()
    }
    # And the lookup the routes use.
    for action in Action:
        if action.value in EXPECTED:
            for env in ENVS:
                got = {r.value for r in allowed_roles(action, kinds[env])}
                assert got == EXPECTED[action.value].get(env, frozenset()), (action, env)
        elif action.value in EXPECTED_GLOBAL:
            assert {r.value for r in allowed_roles(action, None)} == EXPECTED_GLOBAL[action.value]


# ---------------------------------------------------------------------------------------------------
# The routes


def test_every_route_declares_exactly_one_permission(api: httpx.Client) -> None:
    app = app_of(api)
    routes, strays = route_contexts(app)
    assert not strays, f"routes that are neither API routes nor static files: {strays}"
    found = {(m, c.path) for c in routes for m in c.methods or []}
    # The walk must not go quiet: the routes we know of are all found.
    assert set(PINNED) <= found, f"not found: {sorted(set(PINNED) - found)}"
    assert any(isinstance(r, Mount) and isinstance(r.app, Door) for r in app.routes[:1]), "the door is mounted first"
    wrong = []
    for context in routes:
        permissions = list(declared_permissions(context.dependant))
        where = f"{'/'.join(sorted(context.methods or []))} {context.path}"
        if len(permissions) != 1:
            wrong.append(f"{where}: declares {len(permissions)} Permission(s)")
            continue
        for method in context.methods or []:
            pinned = PINNED.get((method, context.path))
            if pinned is not None and permissions[0].action.value != pinned:
                wrong.append(f"{method} {context.path}: declares '{permissions[0].action}', expected '{pinned}'")
    assert not wrong, "\n".join(wrong)


def test_every_route_answers_every_role_as_the_table_says(api: httpx.Client, project: Project) -> None:
    app = app_of(api)
    calls = all_calls(app)
    walkers = make_walkers(project)
    failures: list[str] = []
    outcomes = {"allowed": 0, "denied": 0}
    for call in calls:
        for walker in walkers:
            response = call.send(api, bearer(walker.token))
            allowed = walker.may(call.action, call.env)
            outcomes["allowed" if allowed else "denied"] += 1
            who = f"{walker.name} {call}"
            if allowed:
                if response.status_code in (401, 403):
                    failures.append(f"{who}: expected allowed, got {response.status_code} {response.text}")
                elif response.status_code >= 500 and not (call.door and response.status_code == 503):
                    failures.append(f"{who}: server error {response.status_code} {response.text}")
                continue
            if response.status_code != 403:
                failures.append(f"{who}: expected 403, got {response.status_code} {response.text[:200]}")
                continue
            if call.method == "HEAD":
                continue  # no body to read
            if call.door:  # MLflow's shape, so MLflow clients raise PERMISSION_DENIED
                body = response.json()
                if body.get("error_code") != "PERMISSION_DENIED" or f"'{call.action}'" not in body["message"]:
                    failures.append(f"{who}: the denial is not MLflow's or does not name '{call.action}': {body}")
                continue
            error = error_of(response)
            if error["code"] != "forbidden" or f"'{call.action}'" not in error["message"]:
                failures.append(f"{who}: the denial does not name '{call.action}': {error}")
            if error["details"].get("action") != call.action:
                failures.append(f"{who}: details name {error['details'].get('action')!r}, not {call.action!r}")
    assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures[:60])
    # The walk did exercise both sides, for every kind of route.
    assert outcomes["allowed"] > 100 and outcomes["denied"] > 100, outcomes
    assert {c.action for c in calls} >= {"public", "authenticated", "read", "train", "administer"}


def test_a_token_bound_only_to_dev_is_refused_in_staging_and_production(api: httpx.Client, project: Project) -> None:
    """Every role in dev, and still nothing at all on staging and production resources."""
    db = project.db()
    try:
        bindings = accounts.parse_bindings(list(ROLES), ["dev"], project.settings.env_names)
        _, issued = accounts.create_user(db, actor="admin", name="dev-everything", bindings=bindings)
    finally:
        db.dispose()
    walker = Walker("dev-everything", issued.value, frozenset(ROLES), frozenset({"dev"}))
    scoped = [c for c in all_calls(app_of(api)) if c.env is not None]
    assert {c.route for c in scoped} >= {DOOR, "/api/v1/environments/{env}"}
    failures = []
    for call in scoped:
        response = call.send(api, bearer(walker.token))
        if call.env == "dev":  # the same token does work in dev
            if walker.may(call.action, "dev") == (response.status_code in (401, 403)):
                failures.append(f"{call}: in dev, got {response.status_code} {response.text[:200]}")
        elif response.status_code != 403:
            failures.append(f"{call}: expected 403, got {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)
    assert sum(c.env != "dev" for c in scoped) >= 10


def test_without_a_token_only_public_routes_answer(api: httpx.Client) -> None:
    calls = all_calls(app_of(api))
    failures = []
    for call in calls:
        response = call.send(api)
        if call.action == "public":
            if response.status_code != 200:
                failures.append(f"{call}: public, got {response.status_code} {response.text[:200]}")
            continue
        if response.status_code != 401:
            failures.append(f"{call}: expected 401, got {response.status_code} {response.text[:200]}")
            continue
        if response.headers.get("www-authenticate") != "Bearer":
            failures.append(f"{call}: 401 without 'WWW-Authenticate: Bearer'")
        if call.door and call.method != "HEAD":
            if response.json().get("error_code") != "UNAUTHENTICATED":
                failures.append(f"{call}: not MLflow's UNAUTHENTICATED: {response.text}")
            continue
        if call.method != "HEAD" and error_of(response)["code"] != "unauthenticated":
            failures.append(f"{call}: {response.text}")
    assert not failures, "\n".join(failures)
    assert sum(c.action == "public" for c in calls) >= 2
    assert sum(c.action != "public" for c in calls) > 20


GARBAGE = {
    "not a token": "Bearer garbage",
    "unknown mlg_ token": "Bearer mlg_" + "A" * 43,
    "unknown token as Basic password": "Basic " + base64.b64encode(b"someone:mlg_nope").decode(),
    "malformed Basic": "Basic %%%",
    "unsupported scheme": "Token abc",
}


def test_a_garbage_token_is_refused_everywhere_but_public_routes(api: httpx.Client) -> None:
    calls = all_calls(app_of(api))
    failures = []
    for label, header in GARBAGE.items():
        for call in calls:
            response = call.send(api, {"Authorization": header})
            if call.action == "public":
                if response.status_code != 200:
                    failures.append(f"{label} {call}: public, got {response.status_code}")
            elif response.status_code != 401:
                failures.append(f"{label} {call}: expected 401, got {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


def test_door_writes_outside_development_are_refused_even_to_admin(api: httpx.Client, project: Project) -> None:
    for env in ("staging", "production"):
        response = api.post(f"/mlflow/{env}/{DOOR_WRITES['POST']}", json={}, headers=bearer(project.tokens["admin"]))
        assert response.status_code == 403, response.text
        error = response.json()  # in MLflow's shape: MLflow clients raise PERMISSION_DENIED
        assert error["error_code"] == "PERMISSION_DENIED"
        assert "'train'" in error["message"] and env in error["message"] and "admin" in error["message"]
    # An unknown environment: 401 without a token, 404 with one.
    assert api.post(f"/mlflow/nowhere/{DOOR_WRITES['POST']}", json={}).status_code == 401
    response = api.post(f"/mlflow/nowhere/{DOOR_WRITES['POST']}", json={}, headers=bearer(project.tokens["dana"]))
    assert response.status_code == 404
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "dev, staging, production" in response.json()["message"]
