"""The whole API fuzzed from its OpenAPI document against a real server (tests/support/fuzz.py): no 5xx,
every answer as documented, every refusal in the error shape.

The suite's run: a few examples of every operation, each sent as the admin and one other person in turn, on
the accounts' home with an endpoint in staging and production and a monitor. `make fuzz`: more examples,
fresh each run, every person on every example, on the staged world (versions of `diabetes` in staging,
gate B open), so that deployments, checks, decisions and scoring get past their lookups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

from tests.support import fuzz
from tests.support.project import LiveServer, Project, bearer, start_server, stop_server
from tests.support.worlds import Template

# A few examples per operation keep the suite's run short (about 65 operations); `make fuzz` sets more.
SUITE_EXAMPLES = 4
MODEL = ENDPOINT = "diabetes"
MONITOR = "quality"


# Requests past what the server can hold (a version beyond its integer column, a time whose offset takes it
# out of the calendar, a monitor window longer than datetime reaches) that random examples seldom make;
# each answered 500 once. Sent through the same checks: now a 422 naming the value.
EXPLICIT: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "POST",
        "/api/v1/environments/{env}/endpoints/{name}/deployments",
        "olu",
        {
            "path_parameters": {"env": "staging", "name": ENDPOINT},
            "body": {"model": MODEL, "version": 2**63, "slot": "b"},
        },
    ),
    ("GET", "/api/v1/audit/at", "admin", {"query": {"env": "staging", "time": "0001-01-01T00:00:00+14:00"}}),
    ("GET", "/api/v1/audit/at", "admin", {"query": {"env": "staging", "time": "9999-12-31T23:59:59-14:00"}}),
    *(
        (
            "POST",
            "/api/v1/environments/{env}/monitors",
            "olu",
            {"path_parameters": {"env": "production"}, "body": {"name": "long", "endpoint": ENDPOINT, key: value}},
        )
        for key, value in (("window", "999999d"), ("window", "99999999999999999d"), ("schedule", "9999999999m"))
    ),
]


def _seed(server: LiveServer) -> None:
    """What the operator makes for the run to find: `diabetes` in staging and production, a monitor on it."""
    api = f"{server.url}/api/v1/environments"
    headers = bearer(server.project.tokens["olu"])
    for env in ("staging", "production"):
        made = httpx.post(f"{api}/{env}/endpoints", headers=headers, json={"name": ENDPOINT}, timeout=120)
        assert made.status_code in (201, 409), made.text  # 409: the world's config declares it already
    body = {"name": MONITOR, "endpoint": ENDPOINT}
    made = httpx.post(f"{api}/production/monitors", headers=headers, json=body, timeout=60)
    assert made.status_code == 201, made.text


@pytest.fixture(scope="module")
def fuzzed_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of the fuzz's own: what the run creates and revokes stays out of every other test's world."""
    root = tmp_path_factory.mktemp("fuzz")
    if fuzz.LONG:
        staged: Template = request.getfixturevalue("staged_template")
        project = staged.copy(root)
    else:
        accounts: Project = request.getfixturevalue("project_template")
        project = accounts.copy(root / "project")
    server = start_server(project)
    try:
        _seed(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def fuzzed_schema(fuzzed_server: LiveServer) -> schemathesis.BaseSchema:
    """The OpenAPI document the server publishes, as schemathesis reads it."""
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/api/v1/openapi.json", timeout=30)


def _protected(server: LiveServer) -> fuzz.Protected:
    tokens = server.project.tokens
    listed = httpx.get(f"{server.url}/api/v1/tokens", headers=bearer(tokens["admin"]), timeout=30)
    assert listed.status_code == 200, listed.text
    return fuzz.Protected(token_ids=frozenset(t["id"] for t in listed.json()["data"]), people=frozenset(tokens))


def _known(server: LiveServer) -> dict[str, list[str]]:
    """The values of path parameters that name what the server holds."""
    return {
        "env": server.project.settings.env_names,
        "name": [ENDPOINT],  # endpoints/{name} and models/{name}
        "monitors/{name}": [MONITOR],
        "users/{name}": sorted(server.project.tokens),
        "ref": [MODEL],
    }


def test_every_operation_answers_as_documented_for_every_role(
    fuzzed_server: LiveServer, fuzzed_schema: schemathesis.BaseSchema
) -> None:
    figures = fuzz.fuzz(
        fuzzed_schema,
        base_url=fuzzed_server.url,
        tokens=fuzzed_server.project.tokens,
        protected=_protected(fuzzed_server),
        known=_known(fuzzed_server),
        max_examples=fuzz.EXAMPLES or SUITE_EXAMPLES,
    )
    print(f"{figures.table()}\n" if fuzz.LONG else "", figures.summary(), sep="")
    assert figures.operations == len(list(fuzzed_schema.get_all_operations())) > 50
    assert not figures.failures, "\n\n".join(f"{label}\n{report}" for label, report in figures.failures.items())
    # Every token the run sends still signs its person in: the run kept its own credentials.
    for name, token in fuzzed_server.project.tokens.items():
        whoami = httpx.get(f"{fuzzed_server.url}/api/v1/whoami", headers=bearer(token), timeout=30)
        assert whoami.status_code == 200, name


@pytest.mark.parametrize(("method", "path", "person", "request_parts"), EXPLICIT)
def test_values_past_what_the_server_holds_are_refused_as_documented(
    fuzzed_server: LiveServer,
    fuzzed_schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    person: str,
    request_parts: dict[str, Any],
) -> None:
    case = fuzzed_schema[path][method].Case(**request_parts)
    token = fuzzed_server.project.tokens[person]
    answer = case.call_and_validate(base_url=fuzzed_server.url, headers=bearer(token), checks=fuzz.CHECKS)
    assert answer.status_code == 422, answer.text
