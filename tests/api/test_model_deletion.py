"""Deleting a dev version, without MLflow: a fake registry stands in for dev's, on one control database
(SQLite, PostgreSQL). The live path (CLI, door, audit) is in tests/api/test_registration.py.

A promoted version stays, and MLflow is not asked; when MLflow refuses, mlgate records nothing; a
version MLflow already lost (an earlier attempt that died before recording) is marked deleted; staging's
versions are never deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mlgate.adapters.mlflow.registry import LoggedModel, RunRecord
from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import AuditEvent, ModelVersion, utcnow
from mlgate.errors import BackendError, ConflictError, NotFoundError, PermissionDeniedError
from mlgate.services.registration import deletion, models
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.project import Project
from tests.support.promotion_world import approved_promotion

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures, imported for pytest to find


class FakeRegistry:
    """dev's registry as deletion uses it: records each delete, or fails as told."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.fail = fail
        self.deleted: list[tuple[str, int, bool]] = []

    def delete_version(self, *, name: str, version: int, drop_model: bool) -> None:
        self.deleted.append((name, version, drop_model))
        if self.fail is not None:
            raise self.fail

    def run(self, run_id: str) -> RunRecord:
        raise AssertionError("deletion reads no run")

    def logged_models_of(self, run: RunRecord) -> list[LoggedModel]:
        raise AssertionError("deletion reads no logged model")

    def logged_model(self, model_uri: str) -> LoggedModel:
        raise AssertionError("deletion reads no logged model")

    def download(self, model: LoggedModel, destination: Path) -> Path:
        raise AssertionError("deletion downloads nothing")

    def create_version(
        self, *, name: str, model: LoggedModel, run_id: str | None, tags: dict[str, str], description: str
    ) -> tuple[int, bool]:
        raise AssertionError("deletion creates nothing")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def control_db(request: pytest.FixtureRequest, project: Project) -> Iterator[Database]:
    url = project.settings.database_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = project.db(url)
    migrate.upgrade(db)
    yield db
    db.dispose()


def _record(db: Database, *, env: str = "dev", source_id: int | None = None) -> int:
    with db.write() as session:
        row = ModelVersion(
            environment=env,
            name="risk",
            version=1,
            digest="ab" * 32,
            run_id=None,
            model_uri="models:/m-fedcba9876543210",
            signature={"inputs": [{"name": "age", "type": "double"}]},
            input_example=None,
            lineage={},
            profile=None,
            card="# Model card: risk, version 1",
            source_id=source_id,
            created_by="dana" if source_id is None else "system",
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return row.id


def _delete(project: Project, db: Database, registry: FakeRegistry, *, env: str = "dev") -> deletion.DeletedVersion:
    settings = project.settings
    return deletion.delete_version(db, settings, registry, actor="dana", env=env, name="risk", version=1)


def _deletes(db: Database) -> list[tuple[str, str | None]]:
    with db.read() as session:
        rows = session.execute(select(AuditEvent).where(AuditEvent.action == "model.delete")).scalars()
        return [(e.actor, e.subject) for e in rows]


def test_a_promoted_version_stays_and_mlflow_is_not_asked(project: Project, control_db: Database) -> None:
    source_id = _record(control_db)
    copy_id = _record(control_db, env="staging", source_id=source_id)
    with control_db.write() as session:
        source = session.get(ModelVersion, source_id)
        assert source is not None
        request = approved_promotion(source, gate="A", target="staging", approver_role="lead-data-scientist")
        request.state, request.target_version, request.target_version_id = "promoted", 1, copy_id
        session.add(request)
        session.flush()
        request_id = request.id
    registry = FakeRegistry()
    with pytest.raises(ConflictError) as refused:
        _delete(project, control_db, registry)
    assert f"request {request_id}" in refused.value.message and "staging:1" in refused.value.message
    assert registry.deleted == [] and _deletes(control_db) == []
    assert models.get(control_db, "dev", "risk", 1).digest == "ab" * 32

    with pytest.raises(PermissionDeniedError) as denied:  # and the copy itself: never deleted
        _delete(project, control_db, registry, env="staging")
    assert "development environment" in denied.value.message and "promotion" in denied.value.message
    assert registry.deleted == []


def test_when_mlflow_refuses_nothing_is_recorded(project: Project, control_db: Database) -> None:
    _record(control_db)
    registry = FakeRegistry(fail=BackendError("the MLflow tracking server of 'dev' failed: refused"))
    with pytest.raises(BackendError) as failed:
        _delete(project, control_db, registry)
    assert "version 1 of 'risk'" in failed.value.message and "recorded nothing" in failed.value.message
    assert "refused" in failed.value.message
    assert registry.deleted == [("risk", 1, False)]  # the registered model itself is never dropped
    assert _deletes(control_db) == []
    assert [v.version for v in models.list_versions(control_db, "dev")] == [1]


def test_a_version_mlflow_already_lost_is_marked_deleted(project: Project, control_db: Database) -> None:
    _record(control_db)
    registry = FakeRegistry(fail=NotFoundError("version 1 of 'risk' does not exist in 'dev'"))
    deleted = _delete(project, control_db, registry)
    assert (deleted.name, deleted.version, deleted.deleted_by) == ("risk", 1, "dana")
    assert _deletes(control_db) == [("dana", "model:risk:1")]
    assert models.list_versions(control_db, "dev") == []
    with pytest.raises(NotFoundError) as gone:
        models.get(control_db, "dev", "risk", 1)
    assert "was deleted by dana" in gone.value.message and gone.value.details["deleted_by"] == "dana"
    with pytest.raises(NotFoundError):  # once is enough: MLflow is not asked again
        _delete(project, control_db, FakeRegistry())
    assert _deletes(control_db) == [("dana", "model:risk:1")]
