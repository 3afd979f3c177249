"""The promotion worker's claim on an approved request, without MLflow: a fake copier stands in for the
tracking servers, on one control database (SQLite, PostgreSQL).

Two workers ticking the same approved request at once promote it exactly once. A copy whose record cannot
be written is discarded and the request fails; an unreachable target store fails the request with the
reason, and it is not tried again. A request left `promoting` is resumed at start and not claimed by ticks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from mlgate.adapters.mlflow.copy import CopiedVersion, CopySpec
from mlgate.adapters.mlflow.fake import FakeTrackingServers
from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import AuditEvent, ModelVersion, PromotionRequest, utcnow
from mlgate.errors import BackendError
from mlgate.services.promotion.copying import PromotionWorker
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.project import Project
from tests.support.promotion_world import approved_promotion

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures, imported for pytest to find


class FakeCopier:
    """Stands in for MLflow: hands out target versions, slowly, and counts what it was asked."""

    def __init__(self, *, version: int = 1, fail: Exception | None = None) -> None:
        self.version = version
        self.fail = fail
        self.promoted: list[CopySpec] = []
        self.discarded: list[CopiedVersion] = []
        self._lock = threading.Lock()

    def promote(self, spec: CopySpec) -> CopiedVersion:
        with self._lock:
            self.promoted.append(spec)
        time.sleep(0.3)  # long enough for a second worker to try the same request
        if self.fail is not None:
            raise self.fail
        return CopiedVersion(
            environment=spec.target_env,
            name=spec.name,
            version=self.version,
            model_uri="models:/m-0123456789abcdef",
            digest=spec.digest,
            adopted=False,
            previous_candidate=None,
        )

    def discard(self, copied: CopiedVersion) -> None:
        with self._lock:
            self.discarded.append(copied)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def control_db(request: pytest.FixtureRequest, project: Project) -> Iterator[Database]:
    url = project.settings.database_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = project.db(url)
    migrate.upgrade(db)
    yield db
    db.dispose()


def _approved_in(db: Database, *, digest: str = "ab" * 32) -> int:
    with db.write() as session:
        record = ModelVersion(
            environment="dev",
            name="risk",
            version=1,
            digest=digest,
            run_id=None,
            model_uri="models:/m-fedcba9876543210",
            signature={"inputs": [{"name": "age", "type": "double"}]},
            input_example=None,
            lineage={"metrics": {"accuracy": 0.9}},
            profile=None,
            card="# Model card: risk, version 1",
            source_id=None,
            created_by="dana",
            created_at=utcnow(),
        )
        session.add(record)
        session.flush()
        request = approved_promotion(record, gate="A", target="staging", approver_role="lead-data-scientist")
        session.add(request)
        session.flush()
        return request.id


def _worker(project: Project, db: Database, copier: FakeCopier) -> PromotionWorker:
    settings = project.settings
    return PromotionWorker(settings, db, FakeTrackingServers(settings.env_names), "http://testserver", copier=copier)


def test_two_workers_ticking_at_once_promote_a_request_exactly_once(project: Project, control_db: Database) -> None:
    request_id = _approved_in(control_db)
    copier = FakeCopier()
    workers = [_worker(project, control_db, copier) for _ in range(2)]
    start = threading.Barrier(len(workers))
    done: list[list[int]] = []

    def tick(worker: PromotionWorker) -> None:
        start.wait()
        done.append(worker.tick())

    threads = [threading.Thread(target=tick, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(done) == [[], [request_id]]
    assert len(copier.promoted) == 1
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and request.state == "promoted" and request.target_version == 1
        copies = list(session.execute(select(ModelVersion).where(ModelVersion.environment == "staging")).scalars())
        assert [(c.version, c.source_id, c.created_by) for c in copies] == [(1, request.model_version_id, "system")]
        assert request.target_version_id == copies[0].id
        promotes = session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "request.promote")
        ).scalar_one()
        assert promotes == 1


def test_a_copy_whose_record_cannot_be_written_is_discarded_and_the_request_fails(
    project: Project, control_db: Database
) -> None:
    request_id = _approved_in(control_db)
    with control_db.write() as session:  # staging version 1 is already recorded: the copy's number is taken
        source = session.execute(select(ModelVersion)).scalar_one()
        session.add(
            ModelVersion(
                **{c: getattr(source, c) for c in ("name", "digest", "model_uri", "signature", "lineage", "card")},
                environment="staging",
                version=1,
                input_example=None,
                profile=None,
                created_by="system",
                created_at=utcnow(),
            )
        )
    copier = FakeCopier(version=1)
    assert _worker(project, control_db, copier).tick() == [request_id]
    assert [c.version for c in copier.discarded] == [1]
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and request.state == "failed" and request.target_version is None
        assert request.failure and "already records" in request.failure


def test_an_unreachable_target_store_fails_the_request_with_the_reason(project: Project, control_db: Database) -> None:
    request_id = _approved_in(control_db)
    reason = "the MLflow tracking server of 'staging' failed on creating a logged model for 'risk': refused"
    copier = FakeCopier(fail=BackendError(reason))
    worker = _worker(project, control_db, copier)
    assert worker.tick() == [request_id]
    assert worker.tick() == []  # closed: not tried again
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and (request.state, request.failure) == ("failed", reason)
        assert session.execute(select(ModelVersion).where(ModelVersion.environment == "staging")).first() is None


def test_a_request_left_promoting_is_resumed_at_start_and_not_claimed_by_ticks(
    project: Project, control_db: Database
) -> None:
    request_id = _approved_in(control_db)
    with control_db.write() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None
        request.state = "promoting"
    copier = FakeCopier()
    worker = _worker(project, control_db, copier)
    assert worker.tick() == []  # ticks take approved requests only
    assert worker.resume() == [request_id]
    with control_db.read() as session:
        request = session.get(PromotionRequest, request_id)
        assert request is not None and request.state == "promoted"
