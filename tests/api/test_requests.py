"""Gate A through the public surface: requests opened on registration, evidence, who may decide, quorum
under concurrent approvals (SQLite, and PostgreSQL with a team's own gate policy: its approver role,
quorum and expiry), rejection, the inbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlgate.services.identity import accounts
from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)
from tests.support.project import LiveServer, Project, bearer, start_server, stop_server

# Logs one model per "user:seed" argument, as that user (the token of each is in MLGATE_TEST_TOKENS),
# through the door named by MLFLOW_TRACKING_URI; prints {"user:seed": run_id} as its last line.
LOG_MODELS = textwrap.dedent(
    """
    import json, os, sys
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    tokens = json.loads(os.environ.pop("MLGATE_TEST_TOKENS"))
    runs = {}
    for wanted in sys.argv[1:]:
        user, seed = wanted.split(":")
        os.environ["MLFLOW_TRACKING_TOKEN"] = tokens[user]
        mlflow.set_experiment(f"gate-tests-{user}")
        X = np.random.default_rng(int(seed)).normal(size=(80, 3))
        y = (X[:, 0] > 0).astype(int)
        with mlflow.start_run() as run:
            model = LogisticRegression().fit(X, y)
            mlflow.log_metric("Accuracy", float(model.score(X, y)))
            mlflow.sklearn.log_model(
                model, name="model", signature=infer_signature(X, model.predict(X)), pip_requirements=["scikit-learn"]
            )
        runs[wanted] = run.info.run_id
    print(json.dumps(runs))
    """
)

# Extra people: more leads to race each other, an author who is also a lead.
EXTRA = {"lena": (["lead-data-scientist"], ["staging"]), "luke": (["lead-data-scientist"], ["staging"])}


@dataclass
class Gates:
    server: LiveServer
    runs: dict[str, str] = field(default_factory=dict)  # "user:seed" -> the run logged ahead of its test

    @property
    def tokens(self) -> dict[str, str]:
        return self.server.project.tokens

    def cli(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.server.project.run(*args, token=self.tokens[user], url=self.server.url)

    def api(self, user: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.server.url}{path}", headers=bearer(self.tokens[user]), timeout=60, **kwargs
        )

    def log_models(self, *wanted: str) -> None:
        """Log one model per "user:seed" through the dev door with plain MLflow, in one process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLGATE_"))}
        env |= {"MLFLOW_TRACKING_URI": f"{self.server.url}/mlflow/dev", "MLGATE_TEST_TOKENS": json.dumps(self.tokens)}
        logged = subprocess.run(
            [sys.executable, "-c", LOG_MODELS, *wanted],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert logged.returncode == 0, logged.stderr[-2000:]
        self.runs |= json.loads(logged.stdout.strip().splitlines()[-1])

    def register(self, user: str, name: str, seed: int = 0) -> dict[str, Any]:
        """`user` registers the model they logged with `seed` (logged now unless it was ahead)."""
        if f"{user}:{seed}" not in self.runs:
            self.log_models(f"{user}:{seed}")
        run_id = self.runs[f"{user}:{seed}"]
        done = self.cli(user, "register", "--env", "dev", "--run", run_id, "--name", name, "--json")
        assert done.returncode == 0, done.stderr
        version: dict[str, Any] = json.loads(done.stdout)
        return version


def _add_people(project: Project) -> None:
    db = project.db()
    try:
        for name, (roles, envs) in EXTRA.items():
            bindings = accounts.parse_bindings(roles, envs, project.settings.env_names)
            accounts.create_user(db, actor="admin", name=name, bindings=bindings, email=f"{name}@example.com")
            own = accounts.create_token(db, project.settings, actor=name, user_name=name, name="own", expires_in=None)
            project.tokens[name] = own.value
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def gates(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gates]:
    folder = tmp_path_factory.mktemp("gates") / "project"
    project = project_template.copy(folder)
    _add_people(project)
    server = start_server(project)
    try:
        gates = Gates(server)
        # Every model the module's tests register, logged ahead in one MLflow process.
        gates.log_models(*(f"dana:{seed}" for seed in (0, 1, 3, 4, 5, 6, 7, 9, 10, 11)), "lee:2", "lee:8")
        yield gates
    finally:
        stop_server(server)


def test_registration_opens_gate_a_with_its_evidence(gates: Gates) -> None:
    version = gates.register("dana", "gate-a")
    assert version["request_id"], "registering in dev opens the gate A request"
    shown = gates.cli("lee", "requests", "show", str(version["request_id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    request = json.loads(shown.stdout)
    assert (request["source_env"], request["target_env"], request["state"]) == ("dev", "staging", "open")
    assert (request["requested_by"], request["author"], request["approver_role"]) == (
        "dana",
        "dana",
        "lead-data-scientist",
    )
    evidence = request["evidence"]
    assert evidence["digest"] == version["digest"]
    assert "Accuracy" in evidence["metrics"] and evidence["card"].startswith("#")
    assert evidence["lineage"]["run_id"] == version["run_id"]
    readable = gates.cli("lee", "requests", "show", str(request["id"]))
    assert version["digest"] in readable.stdout and "Accuracy" in readable.stdout
    # lee's inbox has it; dana's (the author, no role in staging) does not.
    assert request["id"] in [r["id"] for r in json.loads(gates.cli("lee", "inbox", "--json").stdout)]
    assert json.loads(gates.cli("dana", "inbox", "--json").stdout) == []


def test_who_may_decide(gates: Gates) -> None:
    request_id = gates.register("dana", "who-decides", seed=1)["request_id"]
    refused = gates.cli("dana", "requests", "approve", str(request_id))
    assert refused.returncode == 1 and "403" in refused.stderr  # no role in staging, and the author
    for user in ("vic", "olu", "sam"):  # viewer and operator in staging; sam has no role there for gate A
        answer = gates.api(user, "POST", f"/api/v1/environments/staging/requests/{request_id}/approve", json={})
        assert answer.status_code == 403, (user, answer.text)
    # A lead who is the model's author may not approve it.
    own = gates.register("lee", "lees-own", seed=2)
    answer = gates.api("lee", "POST", f"/api/v1/environments/staging/requests/{own['request_id']}/approve", json={})
    assert answer.status_code == 403 and "own model" in answer.json()["error"]["message"]
    no_reason = gates.cli("lee", "requests", "reject", str(request_id), "--comment", " ")
    assert no_reason.returncode == 1 and "reason" in no_reason.stderr
    approved = gates.cli("lee", "requests", "approve", str(request_id), "--comment", "looks right", "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["state"] in ("approved", "promoting", "promoted")
    again = gates.api("lena", "POST", f"/api/v1/environments/staging/requests/{request_id}/approve", json={})
    assert again.status_code == 409 and "not open" in again.json()["error"]["message"]
    unknown = gates.api("lee", "POST", "/api/v1/environments/staging/requests/999999/approve", json={})
    assert unknown.status_code == 404


def _approve(gates: Gates, user: str, request_id: int) -> httpx.Response:
    return gates.api(user, "POST", f"/api/v1/environments/staging/requests/{request_id}/approve", json={})


def _refused_by(answer: httpx.Response, rule: str) -> str:
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["details"]["rule"] == rule, error
    return str(error["message"])


def test_whoever_made_the_run_decides_nothing_although_a_colleague_registered_it(gates: Gates) -> None:
    # lee trained a run through the dev door from a laptop; dana registered it.
    done = gates.cli("dana", "register", "--env", "dev", "--run", gates.runs["lee:8"], "--name", "lees-run", "--json")
    assert done.returncode == 0, done.stderr
    request_id = json.loads(done.stdout)["request_id"]
    request = json.loads(gates.cli("luke", "requests", "show", str(request_id), "--json").stdout)
    authors = {a["name"]: a["as"] for a in request["authors"]}
    assert authors == {"lee": ["created the run", "logged the model"], "dana": ["registered the version"]}
    assert request["evidence"]["authors"] == request["authors"]
    assert "authors" in _refused_by(_approve(gates, "lee", request_id), "separation-of-duties")
    # The run's creator is recorded by mlgate from the token: the run's own tags say nothing.
    assert "lee" not in {d for d in request["evidence"]["deciders"]}
    assert _approve(gates, "luke", request_id).status_code == 200


def test_an_admin_decides_no_gate_by_any_path(gates: Gates) -> None:
    request_id = gates.register("dana", "admins-never", seed=9)["request_id"]
    # 1. An admin may not hold an approver role: the grant is refused with the reason.
    grant = {"roles": ["lead-data-scientist"], "environments": ["staging"]}
    refused = gates.api("admin", "POST", "/api/v1/users/admin/roles", json=grant)
    assert refused.status_code in (400, 403, 409, 422), refused.text
    assert "administrator" in refused.json()["error"]["message"]
    assert _refused_by(_approve(gates, "admin", request_id), "admins-never-decide")
    # 2. A token an admin creates for an approver signs in, and decides nothing.
    made = gates.api("admin", "POST", "/api/v1/users/lena/tokens", json={"name": "reset"})
    assert made.status_code == 201, made.text
    reset = made.json()["token"]
    assert gates.api("admin", "GET", "/api/v1/whoami").status_code == 200
    answer = httpx.post(
        f"{gates.server.url}/api/v1/environments/staging/requests/{request_id}/approve",
        json={},
        headers=bearer(reset),
        timeout=60,
    )
    assert "created by admin" in _refused_by(answer, "own-token")
    # lena, and the gate's other approvers, are told of the token.
    for person in ("lena", "lee", "luke"):
        inbox = gates.api(person, "GET", "/api/v1/inbox").json()["data"]
        assert any(item["event"] == "identity.token-issued" and "lena" in item["text"] for item in inbox), person
    # With the reset token lena makes her own, and that one decides.
    own = httpx.post(f"{gates.server.url}/api/v1/me/tokens", json={"name": "mine"}, headers=bearer(reset), timeout=60)
    assert own.status_code == 201, own.text
    mine = own.json()["token"]
    answer = httpx.post(
        f"{gates.server.url}/api/v1/environments/staging/requests/{request_id}/approve",
        json={},
        headers=bearer(mine),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def test_an_approver_role_granted_after_the_request_opened_does_not_count_for_it(gates: Gates) -> None:
    made = gates.api(
        "admin",
        "POST",
        "/api/v1/users",
        json={"name": "nia", "roles": ["viewer"], "environments": ["staging"], "email": "nia@example.com"},
    )
    assert made.status_code == 201, made.text
    own = httpx.post(
        f"{gates.server.url}/api/v1/me/tokens",
        json={"name": "own"},
        headers=bearer(made.json()["token"]["token"]),
        timeout=60,
    )
    assert own.status_code == 201, own.text
    gates.tokens["nia"] = own.json()["token"]
    request_id = gates.register("dana", "late-grant", seed=10)["request_id"]
    grant = {"roles": ["lead-data-scientist"], "environments": ["staging"]}
    assert gates.api("admin", "POST", "/api/v1/users/nia/roles", json=grant).status_code == 200
    # nia and the gate's approvers are told of the grant.
    for person in ("nia", "lee"):
        inbox = gates.api(person, "GET", "/api/v1/inbox").json()["data"]
        assert any(item["event"] == "identity.role-granted" and "nia" in item["text"] for item in inbox), person
    assert "after this request" in _refused_by(_approve(gates, "nia", request_id), "role-granted-after-request")
    request = json.loads(gates.cli("lee", "requests", "show", str(request_id), "--json").stdout)
    assert "nia" not in request["evidence"]["deciders"]
    # The next request counts her.
    later = gates.register("dana", "late-grant-2", seed=11)["request_id"]
    assert _approve(gates, "nia", later).status_code == 200


def test_rejection_closes_the_request_and_needs_a_reason(gates: Gates) -> None:
    request_id = gates.register("dana", "to-reject", seed=3)["request_id"]
    rejected = gates.cli(
        "lena", "requests", "reject", str(request_id), "--comment", "AUC below the clinic's bar", "--json"
    )
    assert rejected.returncode == 0, rejected.stderr
    request = json.loads(rejected.stdout)
    assert request["state"] == "rejected"
    assert request["decisions"][0] | {"at": None} == {
        "actor": "lena",
        "decision": "reject",
        "comment": "AUC below the clinic's bar",
        "at": None,
    }
    late = gates.api("lee", "POST", f"/api/v1/environments/staging/requests/{request_id}/approve", json={})
    assert late.status_code == 409 and "rejected" in late.json()["error"]["message"]
    # A new request for the same version, opened by hand by a lead: its opener may not approve it.
    reopened = gates.cli("lee", "promote", "to-reject:1", "--to", "staging", "--json")
    assert reopened.returncode == 0, reopened.stderr
    new_id = json.loads(reopened.stdout)["id"]
    own = gates.api("lee", "POST", f"/api/v1/environments/staging/requests/{new_id}/approve", json={})
    assert own.status_code == 403 and "opened this request" in own.json()["error"]["message"]
    assert (
        gates.api("lena", "POST", f"/api/v1/environments/staging/requests/{new_id}/approve", json={}).status_code == 200
    )


def test_promoting_out_of_order_or_twice_is_refused(gates: Gates) -> None:
    version = gates.register("dana", "order", seed=4)
    skipped = gates.cli("dana", "promote", f"order:{version['version']}", "--to", "production", "--from", "dev")
    assert skipped.returncode == 1 and "not the next environment" in skipped.stderr
    twice = gates.cli("dana", "promote", f"order:{version['version']}", "--to", "staging")
    assert twice.returncode == 1 and "409" in twice.stderr and "already has request" in twice.stderr
    missing = gates.cli("dana", "promote", "order:99", "--to", "staging")
    assert missing.returncode == 1 and "404" in missing.stderr
    no_role = gates.cli("vic", "promote", f"order:{version['version']}", "--to", "staging")
    assert no_role.returncode == 1 and "403" in no_role.stderr


def _race(gates: Gates, request_id: int, users: list[str]) -> list[int]:
    barrier = threading.Barrier(len(users))
    statuses: list[int] = []

    def approve(user: str) -> None:
        barrier.wait()
        answer = gates.api(user, "POST", f"/api/v1/environments/staging/requests/{request_id}/approve", json={})
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=approve, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def _approvals_audited(gates: Gates, request_id: int) -> list[dict[str, Any]]:
    events = gates.api("admin", "GET", "/api/v1/audit", params={"action": "request."}).json()["data"]
    return [e for e in events if e["subject"] == f"request:{request_id}"]


def test_concurrent_approvals_complete_the_quorum_once(gates: Gates) -> None:
    for seed in (5, 6):
        request_id = gates.register("dana", f"race-{seed}", seed=seed)["request_id"]
        assert _race(gates, request_id, ["lee", "lena", "luke"]) == [200, 409, 409]
        request = gates.api("lee", "GET", f"/api/v1/environments/staging/requests/{request_id}").json()
        assert len(request["decisions"]) == 1
        approvals = [e for e in _approvals_audited(gates, request_id) if e["action"] == "request.approve"]
        assert len(approvals) == 1


# A team's own policy: two operators approve into staging, within EXPIRY_S of the request.
OPERATORS = {name: (["operator"], ["staging"]) for name in ("olu", "oren", "otto")}
EXPIRY_S = 15.0


def _gated_project(
    project_template: Project, folder: Path, gates_config: list[dict[str, Any]], database_url: str
) -> Project:
    import shutil

    from mlgate.services.setup import initialize

    # the template's home (its MLflow stores made already) without its control database: this one's is
    # on PostgreSQL, initialized below with its own first admin
    shutil.copytree(project_template.path, folder, ignore=shutil.ignore_patterns("control.db*"))
    config = yaml.safe_load((folder / "mlgate.yaml").read_text())
    config["gates"] = gates_config
    config["database"] = {"url": database_url}
    (folder / "mlgate.yaml").write_text(yaml.safe_dump(config))
    project = Project(folder)
    report = initialize(project.settings)
    assert report.admin_token
    project.tokens["admin"] = report.admin_token
    db = project.db()
    try:
        people = {"dana": (["data-scientist"], ["dev"]), "lee": (["lead-data-scientist"], ["dev", "staging"])}
        for name, (roles, envs) in (people | OPERATORS).items():
            bindings = accounts.parse_bindings(roles, envs, project.settings.env_names)
            accounts.create_user(db, actor="admin", name=name, bindings=bindings)
            own = accounts.create_token(db, project.settings, actor=name, user_name=name, name="own", expires_in=None)
            project.tokens[name] = own.value  # a decision needs a token its holder made
    finally:
        db.dispose()
    return project


@pytest.mark.postgres
def test_the_gate_policy_names_the_approver_its_quorum_and_expiry_on_postgresql(
    project_template: Project,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    gate_a = {
        "name": "A",
        "from": "dev",
        "to": "staging",
        "approver_role": "operator",
        "approvals": 2,
        "expiry_hours": EXPIRY_S / 3600,
    }
    gate_b = {"name": "B", "from": "staging", "to": "production", "approver_role": "software-developer"}
    project = _gated_project(project_template, tmp_path / "pg", [gate_a, gate_b], postgres_url)
    server = start_server(project)
    try:
        gates = Gates(server)
        gates.log_models("dana:0", "dana:1")
        # The approver the policy names: the operators' inbox has the request, a lead may not decide it.
        request_id = gates.register("dana", "short-lived", seed=1)["request_id"]  # left to expire
        waiting = json.loads(gates.cli("olu", "inbox", "--json").stdout)
        assert [r["id"] for r in waiting] == [request_id] and waiting[0]["approver_role"] == "operator"
        lead = gates.api("lee", "POST", f"/api/v1/environments/staging/requests/{request_id}/approve", json={})
        assert lead.status_code == 403 and "operator" in lead.json()["error"]["message"]

        # The quorum (while the short-lived request's time runs out): three operators race, two approvals
        # count, the third finds it decided.
        quorum = gates.register("dana", "quorum", seed=0)["request_id"]
        statuses = _race(gates, quorum, list(OPERATORS))
        assert statuses == [200, 200, 409]
        request = gates.api("lee", "GET", f"/api/v1/environments/staging/requests/{quorum}").json()
        assert request["state"] in ("approved", "promoting", "promoted")
        assert [d["decision"] for d in request["decisions"]] == ["approve", "approve"]
        approvals = [e for e in _approvals_audited(gates, quorum) if e["action"] == "request.approve"]
        assert len(approvals) == 2

        # Expiry: left undecided, it expires and can no longer be approved.
        deadline = time.monotonic() + EXPIRY_S + 30
        while True:
            state = gates.api("lee", "GET", f"/api/v1/environments/staging/requests/{request_id}").json()["state"]
            if state == "expired" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert state == "expired"
        late = gates.api("olu", "POST", f"/api/v1/environments/staging/requests/{request_id}/approve", json={})
        assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
        expired = [e for e in _approvals_audited(gates, request_id) if e["action"] == "request.expire"]
        assert [e["actor"] for e in expired] == ["system"]
    finally:
        stop_server(server)


def _wait_state(gates: Gates, request_id: int, states: set[str], timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        request: dict[str, Any] = gates.api("lee", "GET", f"/api/v1/environments/staging/requests/{request_id}").json()
        if request["state"] in states or time.monotonic() > deadline:
            return request
        time.sleep(0.5)


def test_gate_b_refuses_approval_until_its_checks_pass(gates: Gates) -> None:
    version = gates.register("dana", "to-production", seed=7)
    assert gates.api("lee", "POST", f"/api/v1/environments/staging/requests/{version['request_id']}/approve", json={})
    promoted = _wait_state(gates, version["request_id"], {"promoted", "failed"})
    assert promoted["state"] == "promoted", promoted["failure"]
    # In staging now: the staging pipeline opens gate B on dana's behalf (gate A's requester); the
    # software developer's approval waits for the four checks.
    deadline = time.monotonic() + 60
    while not (
        found := [
            r
            for r in gates.api("sam", "GET", "/api/v1/environments/production/requests").json()["data"]
            if r["model_name"] == "to-production"
        ]
    ):
        assert time.monotonic() < deadline, "gate B was not opened"
        time.sleep(0.5)
    request = found[0]
    assert (request["gate"], request["approver_role"], request["requested_by"]) == ("B", "software-developer", "dana")
    assert request["required_checks"] == ["lint", "unit-tests", "model-validation", "endpoint-tests"]
    opened = gates.cli("lee", "promote", f"to-production:{promoted['target_version']}", "--to", "production", "--json")
    assert opened.returncode == 1 and "already has request" in opened.stderr
    refused = gates.api("sam", "POST", f"/api/v1/environments/production/requests/{request['id']}/approve", json={})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert set(error["details"]["checks"]) == set(request["required_checks"])
    assert "passed" not in error["details"]["checks"].values()
    assert "lint (" in error["message"]
    # Nothing moved: the request is still open and production has no version of it.
    assert (
        gates.api("sam", "GET", f"/api/v1/environments/production/requests/{request['id']}").json()["state"] == "open"
    )
    assert gates.api("sam", "GET", "/api/v1/environments/production/models").json()["count"] == 0
