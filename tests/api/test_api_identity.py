"""Users and role bindings through HTTP, and what identity changes leave in the control database and
audit log. Tokens and the system principal are tested in test_api_tokens.py."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mlgate.adapters.sql.models import ApiToken
from tests.support.identity_api import admin, audit_events, bindings_of, create_user, error_of, parse_time, whoami
from tests.support.project import Project, bearer

TRAIN_IN_DEV = "/mlflow/dev/api/2.0/mlflow/runs/create"


# ---------------------------------------------------------------------------------------------------
# Creating users


def test_admin_creates_a_user_whose_token_is_shown_once(api: httpx.Client, project: Project) -> None:
    response = create_user(
        api, project, name="nia", roles=["data-scientist"], environments=["dev"], email="nia@example.com"
    )
    assert response.status_code == 201, response.text
    created = response.json()
    token = created["token"]["token"]
    assert token.startswith("mlg_") and len(token) > 40
    assert created["token"]["prefix"] == token[:12]
    assert created["token"]["user"] == "nia"
    assert created["user"]["name"] == "nia" and created["user"]["kind"] == "human"
    assert created["user"]["bindings"] == [{"role": "data-scientist", "environment": "dev"}]

    # The token works, as the new user.
    me = whoami(api, token)
    assert me.status_code == 200 and me.json()["name"] == "nia"
    assert bindings_of(api, token) == {("data-scientist", "dev")}

    # No listing shows the token again.
    listings = [
        api.get("/api/v1/users", headers=admin(project)),
        api.get("/api/v1/users/nia", headers=admin(project)),
        api.get("/api/v1/tokens", headers=admin(project)),
        api.get("/api/v1/tokens", params={"user": "nia"}, headers=admin(project)),
        api.get("/api/v1/me/tokens", headers=bearer(token)),
        api.get("/api/v1/audit", headers=admin(project)),
    ]
    for listing in listings:
        assert listing.status_code == 200, listing.text
        assert token not in listing.text and token[12:] not in listing.text, listing.request.url
        assert '"token":' not in listing.text
    for user in listings[0].json()["data"]:
        parse_time(user["created_at"])
    for token_row in listings[2].json()["data"]:
        parse_time(token_row["created_at"])
    for event in listings[5].json()["data"]:
        parse_time(event["at"])
    mine = listings[4].json()
    assert mine["count"] == 1 and mine["data"][0]["id"] == created["token"]["id"]
    assert mine["data"][0]["prefix"] == token[:12]
    assert "nia" in {u["name"] for u in listings[0].json()["data"]}


def test_a_duplicate_name_is_a_conflict(api: httpx.Client, project: Project) -> None:
    first = create_user(api, project, name="twin", roles=["viewer"], environments=["dev"])
    assert first.status_code == 201, first.text
    again = create_user(api, project, name="twin", roles=["operator"], environments=["production"])
    assert again.status_code == 409
    error = error_of(again)
    assert error["code"] == "conflict" and "twin" in error["message"]
    # Nothing changed: still the first user's bindings, one user.create event for the name.
    shown = api.get("/api/v1/users/twin", headers=admin(project)).json()
    assert shown["bindings"] == [{"role": "viewer", "environment": "dev"}]
    creates = [e for e in audit_events(api, project) if e["action"] == "user.create" and e["subject"] == "user:twin"]
    assert len(creates) == 1
    # The existing team and the system principal are taken names too.
    assert create_user(api, project, name="dana", roles=["viewer"], environments=["dev"]).status_code == 409
    assert create_user(api, project, name="system", roles=["viewer"], environments=["dev"]).status_code == 409


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "u1", "roles": ["wizard"], "environments": ["dev"]}, "wizard"),
        ({"name": "u2", "roles": ["viewer"], "environments": ["qa"]}, "qa"),
        ({"name": "u3", "roles": ["admin"], "environments": ["dev"]}, "admin"),
        ({"name": "u4", "roles": ["viewer"]}, "viewer"),  # a per-environment role without one
        ({"name": "Bad Name", "roles": ["viewer"], "environments": ["dev"]}, "Bad Name"),
        ({"name": "9lives", "roles": ["viewer"], "environments": ["dev"]}, "9lives"),
        (
            {"name": "u5", "roles": ["viewer"], "environments": ["dev"], "email": "not-an-address"},
            "not-an-address",
        ),
        ({"name": "u6", "roles": [], "environments": ["dev"]}, "roles"),
        ({"name": "", "roles": ["viewer"], "environments": ["dev"]}, "name"),
        ({"name": "u7", "roles": ["viewer"], "environments": ["dev"], "email": "a@" + "b" * 300}, "email"),
    ],
)
def test_invalid_users_are_refused_naming_the_problem(
    api: httpx.Client, project: Project, body: dict[str, Any], named: str
) -> None:
    response = create_user(api, project, **body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert named in error["message"], error
    assert body["name"] not in {u["name"] for u in api.get("/api/v1/users", headers=admin(project)).json()["data"]}


def test_admin_is_bound_everywhere_without_environments(api: httpx.Client, project: Project) -> None:
    response = create_user(api, project, name="root2", roles=["admin"])
    assert response.status_code == 201, response.text
    assert bindings_of(api, response.json()["token"]["token"]) == {("admin", "*")}
    # and so may do what admins do
    assert api.get("/api/v1/users", headers=bearer(response.json()["token"]["token"])).status_code == 200


@pytest.mark.parametrize("who", ["dana", "lee", "sam", "olu", "vic"])
def test_non_admins_cannot_manage_identities(api: httpx.Client, project: Project, who: str) -> None:
    headers = bearer(project.tokens[who])
    attempts = [
        api.post("/api/v1/users", json={"name": "sneaky", "roles": ["admin"]}, headers=headers),
        api.get("/api/v1/users", headers=headers),
        api.get("/api/v1/users/dana", headers=headers),
        api.post(
            "/api/v1/users/vic/roles",
            json={"roles": ["operator"], "environments": ["production"]},
            headers=headers,
        ),
        api.post(f"/api/v1/users/{who}/roles", json={"roles": ["admin"]}, headers=headers),
        api.post("/api/v1/users/dana/tokens", json={}, headers=headers),
        api.get("/api/v1/tokens", headers=headers),
        api.delete("/api/v1/tokens/1", headers=headers),
        api.get("/api/v1/audit", headers=headers),
        api.get("/api/v1/audit/verify", headers=headers),
    ]
    for response in attempts:
        assert response.status_code == 403, (response.request.url, response.text)
        error = error_of(response)
        assert error["code"] == "forbidden" and "'administer'" in error["message"]
    # Nothing happened.
    assert "sneaky" not in {u["name"] for u in api.get("/api/v1/users", headers=admin(project)).json()["data"]}
    assert ("admin", "*") not in bindings_of(api, project.tokens[who])
    assert whoami(api, project.tokens["admin"]).status_code == 200  # token 1 was not revoked


# ---------------------------------------------------------------------------------------------------
# Roles


def test_granting_and_revoking_roles_changes_what_a_user_may_do(api: httpx.Client, project: Project) -> None:
    vic = project.tokens["vic"]
    assert ("data-scientist", "dev") not in bindings_of(api, vic)
    refused = api.post(TRAIN_IN_DEV, json={}, headers=bearer(vic))
    assert refused.status_code == 403 and "'train'" in refused.json()["message"]

    granted = api.post(
        "/api/v1/users/vic/roles",
        json={"roles": ["data-scientist"], "environments": ["dev"]},
        headers=admin(project),
    )
    assert granted.status_code == 200, granted.text
    assert {"role": "data-scientist", "environment": "dev"} in granted.json()["bindings"]
    assert ("data-scientist", "dev") in bindings_of(api, vic)
    assert ("viewer", "staging") in bindings_of(api, vic)  # granting adds, it does not replace
    # The door lets the write through now (the fake tracking server behind it is not answering).
    assert api.post(TRAIN_IN_DEV, json={}, headers=bearer(vic)).status_code == 503
    # Granting only dev: staging is still written by promotion alone.
    assert api.post(TRAIN_IN_DEV.replace("/dev/", "/staging/"), json={}, headers=bearer(vic)).status_code == 403
    environments = {
        e["name"]: e["my_roles"] for e in api.get("/api/v1/environments", headers=bearer(vic)).json()["data"]
    }
    assert environments["dev"] == ["data-scientist", "viewer"] and environments["staging"] == ["viewer"]

    revoked = api.post(
        "/api/v1/users/vic/roles/revoke",
        json={"roles": ["data-scientist"], "environments": ["dev"]},
        headers=admin(project),
    )
    assert revoked.status_code == 200, revoked.text
    assert ("data-scientist", "dev") not in bindings_of(api, vic)
    assert api.post(TRAIN_IN_DEV, json={}, headers=bearer(vic)).status_code == 403

    # Losing every binding in an environment loses even reading there.
    api.post(
        "/api/v1/users/vic/roles/revoke",
        json={"roles": ["viewer"], "environments": ["production"]},
        headers=admin(project),
    )
    assert api.get("/api/v1/environments/production", headers=bearer(vic)).status_code == 403
    assert api.get("/api/v1/environments/staging", headers=bearer(vic)).status_code == 200


def test_grant_validates_like_create(api: httpx.Client, project: Project) -> None:
    cases = [
        ({"roles": ["wizard"], "environments": ["dev"]}, "wizard", 422),
        ({"roles": ["viewer"], "environments": ["qa"]}, "qa", 422),
        ({"roles": ["admin"], "environments": ["dev"]}, "admin", 422),
    ]
    for body, named, status in cases:
        response = api.post("/api/v1/users/vic/roles", json=body, headers=admin(project))
        assert response.status_code == status, response.text
        assert named in error_of(response)["message"]
    response = api.post(
        "/api/v1/users/nobody/roles",
        json={"roles": ["viewer"], "environments": ["dev"]},
        headers=admin(project),
    )
    assert response.status_code == 404 and "nobody" in error_of(response)["message"]


# ---------------------------------------------------------------------------------------------------
# What is kept, and the audit log


def test_raw_tokens_are_never_stored_only_their_hashes(api: httpx.Client, project: Project) -> None:
    created = create_user(api, project, name="kim", roles=["operator"], environments=["staging"]).json()
    values = [created["token"]["token"]]
    values.append(api.post("/api/v1/me/tokens", json={"name": "second"}, headers=bearer(values[0])).json()["token"])
    values.append(api.post("/api/v1/users/kim/tokens", json={"name": "third"}, headers=admin(project)).json()["token"])
    values.append(api.post("/api/v1/me/tokens", json={"expires_in_days": 2}, headers=admin(project)).json()["token"])
    revoke_id = api.get("/api/v1/me/tokens", headers=bearer(values[0])).json()["data"][-1]["id"]
    assert api.delete(f"/api/v1/me/tokens/{revoke_id}", headers=bearer(values[0])).status_code == 200
    values.extend(project.tokens.values())  # the ones issued at set-up, outside the API
    assert all(v.startswith("mlg_") for v in values)

    home = project.settings.home
    files = [p for p in home.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert any(n.endswith(".db") for n in names), names
    assert any(n.endswith("-wal") for n in names), names  # WAL content is searched too
    for path in files:
        data = path.read_bytes()
        for value in values:
            secret = value[12:].encode()  # the part after the displayed prefix
            assert value.encode() not in data, f"a raw token is in {path}"
            assert secret not in data, f"the secret part of a token is in {path}"

    db = project.db()
    try:
        with db.read() as session:
            stored = set(session.execute(select(ApiToken.token_hash)).scalars())
    finally:
        db.dispose()
    for value in values:
        assert hashlib.sha256(value.encode()).hexdigest() in stored


def test_every_identity_change_is_audited_and_the_chain_verifies(api: httpx.Client, project: Project) -> None:
    start = max((e["seq"] for e in audit_events(api, project)), default=0)
    created = create_user(api, project, name="ada", roles=["viewer"], environments=["dev"])
    assert created.status_code == 201
    ada = created.json()["token"]["token"]
    own = api.post("/api/v1/me/tokens", json={"name": "own"}, headers=bearer(ada)).json()
    assert api.delete(f"/api/v1/me/tokens/{own['id']}", headers=bearer(ada)).status_code == 200
    for_ada = api.post("/api/v1/users/ada/tokens", json={"name": "by-admin"}, headers=admin(project)).json()
    assert api.delete(f"/api/v1/tokens/{for_ada['id']}", headers=admin(project)).status_code == 200
    change = {"roles": ["operator"], "environments": ["staging"]}
    assert api.post("/api/v1/users/ada/roles", json=change, headers=admin(project)).status_code == 200
    assert api.post("/api/v1/users/ada/roles/revoke", json=change, headers=admin(project)).status_code == 200
    # Refused attempts change nothing and record nothing.
    assert create_user(api, project, name="ada", roles=["viewer"], environments=["dev"]).status_code == 409
    assert api.post("/api/v1/users", json={"name": "eve", "roles": ["admin"]}, headers=bearer(ada)).status_code == 403

    events = [e for e in audit_events(api, project) if e["seq"] > start]
    got = sorted((e["seq"], e["actor"], e["action"], e["subject"]) for e in events)
    assert [g[1:] for g in got] == [
        ("admin", "user.create", "user:ada"),
        ("ada", "token.create", "user:ada"),
        ("ada", "token.revoke", "user:ada"),
        ("admin", "token.create", "user:ada"),
        ("admin", "token.revoke", "user:ada"),
        ("admin", "user.grant", "user:ada"),
        ("admin", "user.revoke", "user:ada"),
    ]
    assert all(len(e["hash"]) == 64 and len(e["payload_digest"]) == 64 for e in events)
    # Filters.
    only = api.get("/api/v1/audit", params={"actor": "ada"}, headers=admin(project)).json()["data"]
    assert {e["action"] for e in only} == {"token.create", "token.revoke"}
    grants = api.get("/api/v1/audit", params={"action": "user.grant"}, headers=admin(project)).json()["data"]
    assert [e["subject"] for e in grants] == ["user:ada"]

    verified = api.get("/api/v1/audit/verify", headers=admin(project))
    assert verified.status_code == 200, verified.text
    result = verified.json()
    assert result["ok"] is True and result["broken_seq"] is None and result["reason"] is None
    assert result["events"] == got[-1][0]
