"""Tokens through HTTP: a user's own tokens, with an expiry, listed and revoked; tokens an admin issues
and revokes for others; revoked and expired tokens refused with the reason; a token as a Basic password.
And the system principal, which has no token and cannot sign in, while a job's token of `system` acts
with the role it names, in its own environment's door only."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mlgate.adapters.sql.models import ApiToken, Job, User
from mlgate.domain.permissions import Role
from mlgate.domain.tokens import new_token, token_hash
from mlgate.services.identity import accounts
from tests.support.identity_api import admin, error_of, parse_time, whoami
from tests.support.project import Project, bearer

# ---------------------------------------------------------------------------------------------------
# Tokens


def test_own_tokens_with_expiry_list_and_revoke(api: httpx.Client, project: Project) -> None:
    before = datetime.now(UTC)
    response = api.post(
        "/api/v1/me/tokens",
        json={"name": "laptop", "expires_in_days": 30},
        headers=bearer(project.tokens["lee"]),
    )
    assert response.status_code == 201, response.text
    issued = response.json()
    token = issued["token"]
    assert token.startswith("mlg_") and token != project.tokens["lee"]
    assert issued["user"] == "lee" and issued["name"] == "laptop" and issued["revoked_at"] is None
    expires = parse_time(issued["expires_at"])
    assert before + timedelta(days=30) - timedelta(minutes=1) <= expires <= datetime.now(UTC) + timedelta(days=30)
    assert whoami(api, token).json()["name"] == "lee"

    mine = api.get("/api/v1/me/tokens", headers=bearer(token)).json()
    assert {t["name"] for t in mine["data"]} == {"default", "own", "laptop"}
    assert all(t["user"] == "lee" for t in mine["data"])

    # Revoke it: that token is refused with the reason, the other one of lee still works.
    revoked = api.delete(f"/api/v1/me/tokens/{issued['id']}", headers=bearer(project.tokens["lee"]))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    refused = whoami(api, token)
    assert refused.status_code == 401
    assert "revoked" in error_of(refused)["message"]
    assert whoami(api, project.tokens["lee"]).status_code == 200
    # Revoking again changes nothing and is not an error.
    again = api.delete(f"/api/v1/me/tokens/{issued['id']}", headers=bearer(project.tokens["lee"]))
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_a_revoked_token_cannot_revoke_itself_or_anything(api: httpx.Client, project: Project) -> None:
    issued = api.post("/api/v1/me/tokens", json={}, headers=bearer(project.tokens["sam"])).json()
    assert api.delete(f"/api/v1/me/tokens/{issued['id']}", headers=bearer(issued["token"])).status_code == 200
    for path in ("/api/v1/whoami", "/api/v1/me/tokens", "/api/v1/environments"):
        response = api.get(path, headers=bearer(issued["token"]))
        assert response.status_code == 401 and "revoked" in error_of(response)["message"]


def test_an_expired_token_is_refused(api: httpx.Client, project: Project) -> None:
    response = api.post(
        "/api/v1/me/tokens",
        json={"name": "brief", "expires_in_days": 0.00003},
        headers=bearer(project.tokens["olu"]),
    )
    assert response.status_code == 201, response.text
    issued = response.json()
    expires = parse_time(issued["expires_at"])
    assert expires - parse_time(issued["created_at"]) < timedelta(seconds=5)
    assert whoami(api, issued["token"]).status_code == 200  # about 2.6 seconds of life
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    refused = whoami(api, issued["token"])
    assert refused.status_code == 401
    assert "expired" in error_of(refused)["message"]
    assert whoami(api, project.tokens["olu"]).status_code == 200  # olu's token without expiry lives on


@pytest.mark.parametrize("days", [0, -1, 3651, "soon", None])
def test_token_expiry_must_be_sensible(api: httpx.Client, project: Project, days: Any) -> None:
    response = api.post("/api/v1/me/tokens", json={"expires_in_days": days}, headers=bearer(project.tokens["vic"]))
    if days is None:  # no expiry
        assert response.status_code == 201 and response.json()["expires_at"] is None
        return
    assert response.status_code == 422, response.text
    assert "expires_in_days" in error_of(response)["message"]


def test_admin_issues_and_revokes_tokens_for_others(api: httpx.Client, project: Project) -> None:
    response = api.post("/api/v1/users/dana/tokens", json={"name": "ci", "expires_in_days": 1}, headers=admin(project))
    assert response.status_code == 201, response.text
    issued = response.json()
    assert issued["user"] == "dana" and whoami(api, issued["token"]).json()["name"] == "dana"
    listed = api.get("/api/v1/tokens", params={"user": "dana"}, headers=admin(project)).json()
    assert {t["name"] for t in listed["data"]} == {"default", "own", "ci"}
    assert api.delete(f"/api/v1/tokens/{issued['id']}", headers=admin(project)).status_code == 200
    assert whoami(api, issued["token"]).status_code == 401
    assert api.delete("/api/v1/tokens/999999", headers=admin(project)).status_code == 404
    assert api.post("/api/v1/users/nobody/tokens", json={}, headers=admin(project)).status_code == 404


def test_revoking_someone_elses_token_through_me_is_not_found(api: httpx.Client, project: Project) -> None:
    dana_tokens = api.get("/api/v1/tokens", params={"user": "dana"}, headers=admin(project)).json()["data"]
    dana_token_id = dana_tokens[0]["id"]
    response = api.delete(f"/api/v1/me/tokens/{dana_token_id}", headers=bearer(project.tokens["lee"]))
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    # Same answer as for a token that does not exist: nothing to learn about others' tokens.
    missing = api.delete("/api/v1/me/tokens/999999", headers=bearer(project.tokens["lee"]))
    assert missing.status_code == 404
    assert error_of(response)["message"].replace(str(dana_token_id), "N") == error_of(missing)["message"].replace(
        "999999", "N"
    )
    assert whoami(api, project.tokens["dana"]).status_code == 200
    # Even the admin, through /me, only revokes their own.
    assert api.delete(f"/api/v1/me/tokens/{dana_token_id}", headers=admin(project)).status_code == 404
    assert whoami(api, project.tokens["dana"]).status_code == 200


def test_the_token_also_works_as_a_basic_password(api: httpx.Client, project: Project) -> None:
    """For tools that only do HTTP Basic (MLflow's clients with a username and password)."""
    credential = base64.b64encode(f"dana:{project.tokens['dana']}".encode()).decode()
    response = api.get("/api/v1/whoami", headers={"Authorization": f"Basic {credential}"})
    assert response.status_code == 200 and response.json()["name"] == "dana"


# ---------------------------------------------------------------------------------------------------
# The system principal


def test_the_system_principal_cannot_have_or_use_a_token(api: httpx.Client, project: Project) -> None:
    response = api.post("/api/v1/users/system/tokens", json={}, headers=admin(project))
    assert response.status_code == 422, response.text
    assert "system" in error_of(response)["message"]
    grant = api.post(
        "/api/v1/users/system/roles",
        json={"roles": ["operator"], "environments": ["dev"]},
        headers=admin(project),
    )
    assert grant.status_code == 422, grant.text

    db = project.db()
    try:
        with db.read() as session:
            system_id = session.execute(select(User.id).where(User.name == "system")).scalar_one()
            assert session.execute(select(ApiToken).where(ApiToken.user_id == system_id)).first() is None
        # A token row for system that the API would never issue: still no way in.
        value = new_token()
        with db.write() as session:
            session.add(ApiToken(user_id=system_id, name="smuggled", prefix=value[:12], token_hash=token_hash(value)))
    finally:
        db.dispose()
    for path in ("/api/v1/whoami", "/api/v1/me/tokens", "/api/v1/environments/dev", "/api/v1/users"):
        refused = api.get(path, headers=bearer(value))
        assert refused.status_code == 401, (path, refused.text)
        assert "cannot sign in" in error_of(refused)["message"]
    assert api.get("/mlflow/dev/api/2.0/mlflow/experiments/search", headers=bearer(value)).status_code == 401


def test_a_job_token_of_system_acts_with_its_own_role_in_its_door_only(api: httpx.Client, project: Project) -> None:
    """A job the server starts on its own (a retraining) acts as `system` with the role its token names;
    one whose token names none (an outer-loop check) has no way in."""
    db = project.db()
    try:
        with db.write() as session:
            job = Job(
                environment="dev",
                kind="train",
                state="running",
                command="python train.py",
                spec={},
                data_versions={},
                run_ids=[],
                requested_by="system",
                timeout_s=60,
                backend="local",
                cancel_requested=False,
            )
            session.add(job)
            session.flush()
            job_id = job.id
        minted = {
            role: accounts.mint_job_token(
                db, job_id=job_id, user_name="system", environment="dev", ttl=timedelta(minutes=5), role=role
            )
            for role in (Role.DATA_SCIENTIST, None)
        }
    finally:
        db.dispose()
    search = "/mlflow/{}/api/2.0/mlflow/experiments/search"
    acting = bearer(minted[Role.DATA_SCIENTIST])
    let_through = api.get(search.format("dev"), params={"max_results": 1}, headers=acting)
    assert let_through.status_code == 503  # past the door: no tracking server runs behind the in-process app
    assert api.get(search.format("staging"), params={"max_results": 1}, headers=acting).status_code == 403
    assert api.get("/api/v1/whoami", headers=acting).status_code == 403
    refused = api.get(search.format("dev"), params={"max_results": 1}, headers=bearer(minted[None]))
    assert refused.status_code == 401 and "cannot sign in" in refused.json()["message"]
