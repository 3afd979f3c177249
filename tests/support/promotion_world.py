"""The promotion tests' world, and approved requests written straight into the control database.

`World` is a live server (tests/api/test_promotion.py builds it) with small models registered in dev,
and what the tests read through its doors, on disk and in the control database. `write_approved_request`
writes a request in state `approved`, as its final approval leaves it, for the server's promotion worker
to carry out; the serving, rollout and claim tests use it (or `approved_promotion`) as well.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from mlgate.adapters.mlflow.copy import PROMOTIONS_EXPERIMENT, REQUEST_TAG
from mlgate.adapters.sql.models import Decision, ModelVersion, PromotionRequest, utcnow
from mlgate.services import audit
from tests.support.project import MLGATE, LiveServer, Project, bearer, clean_env

WAIT_S = 60.0


@dataclass
class World:
    project: Project
    server: LiveServer
    code: Path
    runs: dict[str, str] = field(default_factory=dict)
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def tokens(self) -> dict[str, str]:
        return self.project.tokens

    def cli(self, *args: str, user: str = "dana") -> subprocess.CompletedProcess[str]:
        env = clean_env(MLGATE_URL=self.url, MLGATE_TOKEN=self.tokens[user])
        return subprocess.run(
            [MLGATE, *args], cwd=self.code, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    def door(self, env: str, method: str, path: str, *, user: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/mlflow/{env}/{path}", headers=bearer(self.tokens[user]), timeout=60, **kwargs
        )

    def versions(self, env: str, name: str, *, user: str = "vic") -> list[dict[str, Any]]:
        """The MLflow registry's versions of `name` in `env`, through the door (vic reads everywhere)."""
        reply = self.door(
            env, "GET", "api/2.0/mlflow/model-versions/search", user=user, params={"filter": f"name='{name}'"}
        )
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] = reply.json().get("model_versions", [])
        return found

    def files_of(self, env: str, model_uri: str) -> Path:
        """Where a logged model's files are on disk, under `env`'s own artifact root."""
        model_id = model_uri.removeprefix("models:/")
        reply = self.door(env, "GET", f"api/2.0/mlflow/logged-models/{model_id}", user="vic")
        assert reply.status_code == 200, reply.text
        location = str(reply.json()["model"]["info"]["artifact_uri"])
        assert location.startswith("mlflow-artifacts:/"), location
        return self.project.settings.environment(env).artifact_root / location.removeprefix("mlflow-artifacts:/")

    def approved_request(
        self, name: str, version: int, *, source: str = "dev", target: str = "staging", state: str = "approved"
    ) -> int:
        """A request in state `approved`, as the final approval leaves it (lee approved it)."""
        return write_approved_request(self.project, name, version, source=source, target=target, state=state)

    def set_state(self, request_id: int, state: str) -> None:
        db = self.project.db()
        try:
            with db.write() as session:
                request = session.get(PromotionRequest, request_id)
                assert request is not None
                request.state = state
        finally:
            db.dispose()

    def record_as_if_promoted(self, name: str, version: int, *, env: str) -> None:
        """A record of `name`:`version` in `env` that MLflow's registry there knows nothing of."""
        db = self.project.db()
        try:
            with db.write() as session:
                source = session.execute(
                    select(ModelVersion).where(ModelVersion.environment == "dev", ModelVersion.name == name)
                ).scalar_one()
                columns = ("name", "digest", "model_uri", "signature", "input_example", "lineage", "profile", "card")
                session.add(
                    ModelVersion(
                        **{c: getattr(source, c) for c in columns},
                        environment=env,
                        version=version,
                        created_by="system",
                        created_at=utcnow(),
                    )
                )
        finally:
            db.dispose()

    def experiment_id(self, env: str, name: str) -> str:
        reply = self.door(
            env, "GET", "api/2.0/mlflow/experiments/get-by-name", user="vic", params={"experiment_name": name}
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["experiment"]["experiment_id"])

    def logged_models_of_request(self, env: str, request_id: int) -> list[dict[str, Any]]:
        body = {
            "experiment_ids": [self.experiment_id(env, PROMOTIONS_EXPERIMENT)],
            "filter": f"tags.`{REQUEST_TAG}` = '{request_id}'",
        }
        reply = self.door(env, "POST", "api/2.0/mlflow/logged-models/search", user="vic", json=body)
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] = reply.json().get("models", [])
        return found

    def upstream(self, env: str) -> httpx.Client:
        """The environment's tracking server itself, behind the door: on its Unix socket in the home's
        private folder, which only the server's user reaches (as the server does)."""
        from mlgate.adapters.mlflow.unix_transport import pseudo_host
        from mlgate.sockets import tracking_socket

        transport = httpx.HTTPTransport(uds=str(tracking_socket(self.project.settings.home, env)))
        return httpx.Client(base_url=f"http://{pseudo_host(env)}", transport=transport, timeout=30)

    def request(self, request_id: int) -> PromotionRequest:
        db = self.project.db()
        try:
            with db.read() as session:
                found = session.get(PromotionRequest, request_id)
                assert found is not None
                return found
        finally:
            db.dispose()

    def wait(self, request_id: int, *states: str, timeout_s: float = WAIT_S) -> PromotionRequest:
        deadline = time.monotonic() + timeout_s
        while True:
            request = self.request(request_id)
            if request.state in states:
                return request
            assert time.monotonic() < deadline, f"request {request_id} is still {request.state}"
            time.sleep(0.2)


def write_approved_request(
    project: Project,
    name: str,
    version: int,
    *,
    source: str,
    target: str,
    state: str = "approved",
    approver: str = "lee",
) -> int:
    """A request for `source`'s `name`:`version` into `target`, as its final approval by `approver` leaves it
    (in `state`) with the audit events opening and deciding it, written for the server's promotion worker
    to carry out."""
    db = project.db()
    try:
        with db.write() as session:
            record = session.execute(
                select(ModelVersion).where(
                    ModelVersion.environment == source, ModelVersion.name == name, ModelVersion.version == version
                )
            ).scalar_one()
            gate = project.settings.gate_into(target)
            request = approved_promotion(record, gate=gate.name, target=target, approver_role=gate.approver_role.value)
            request.state = state
            session.add(request)
            session.flush()
            session.add(Decision(request_id=request.id, actor=approver, decision="approve", at=utcnow()))
            subject = f"request:{request.id}"
            opened = {"model": name, "version": version, "from": source, "to": target, "digest": record.digest}
            audit.record(
                session, actor="dana", action="request.open", environment=target, subject=subject, payload=opened
            )
            decided = {"comment": None, "state": state}
            audit.record(
                session, actor=approver, action="request.approve", environment=target, subject=subject, payload=decided
            )
            return request.id
    finally:
        db.dispose()


def approved_promotion(record: ModelVersion, *, gate: str, target: str, approver_role: str) -> PromotionRequest:
    now = utcnow()
    return PromotionRequest(
        gate=gate,
        model_version_id=record.id,
        model_name=record.name,
        source_env=record.environment,
        source_version=record.version,
        target_env=target,
        state="approved",
        requested_by="dana",
        author="dana",
        required_approvals=1,
        approver_role=approver_role,
        required_checks=[],
        evidence={"digest": record.digest},
        created_at=now,
        decided_at=now,
    )
