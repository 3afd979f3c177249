"""Promotion: the server's worker that carries out approved requests, acting as `system`.

A request reaches `approved` at its final approval (`services.promotion.requests`). The worker claims it, moving
it to `promoting` in a write transaction that checks the state first (write transactions are
serialized, so of two workers ticking at once exactly one claims it), has the version copied into the
target environment's registry and verified there (`adapters.mlflow.copy`), then writes in ONE
transaction the target's version record (same digest, signature, lineage, profile, card; `source_id`
pointing back), the request's `promoted` state, the audit events and the notifications. A copy whose
record cannot be written is deleted again, and the request fails with the reason.

A request found `promoting` when the worker starts was being carried out by a server that stopped:
it is resumed, and the copy finds the version that attempt registered (by its request tag) and adopts
it instead of making a second one. So a request never gets two versions, and a version is never
left without its record.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.mlflow.base import TrackingServers, VersionCopier
from mlgate.adapters.mlflow.copy import CopiedVersion, CopySpec, MlflowVersionCopier
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, PromotionRequest, utcnow
from mlgate.adapters.sql.queries import model_version, promotion_chain
from mlgate.config import Settings
from mlgate.domain.events import VersionPromoted
from mlgate.domain.gates import RequestState
from mlgate.domain.permissions import SYSTEM
from mlgate.errors import ConflictError, MlgateError, NotFoundError, ValidationError
from mlgate.services import audit
from mlgate.services.events import NO_EVENTS, Publisher
from mlgate.services.notifications import outbox
from mlgate.services.registration.models import version_dir
from mlgate.services.worker import Worker

log = logging.getLogger(__name__)

TICK_S = 1.0
STOP_WAIT_S = 10.0
# Test-only: seconds to wait between the verified copy and its record, so that a test can kill the
# server at the worst moment (a version in the target registry, no record yet).
TEST_DELAY_VARIABLE = "MLGATE_TEST_PROMOTION_DELAY_S"


def _test_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(TEST_DELAY_VARIABLE, "0")))
    except ValueError:
        return 0.0


class PromotionWorker(Worker):
    """A server thread: resumes interrupted promotions at start, then carries out approved requests.
    A copy under way at stop gets `stop_wait_s` to finish, else it is resumed at the next start."""

    name = "promotion-worker"
    interval_s = TICK_S
    stop_wait_s = STOP_WAIT_S

    def __init__(
        self,
        settings: Settings,
        db: Database,
        tracking: TrackingServers,
        base_url: str,
        *,
        copier: VersionCopier | None = None,
        events: Publisher = NO_EVENTS,
    ) -> None:
        self.settings = settings
        self.events = events
        self.db = db
        self.base_url = base_url
        self.copier: VersionCopier = copier or MlflowVersionCopier(tracking.upstream)
        super().__init__()
        self._idle = threading.Condition()
        self._active = 0
        self._delay_s = _test_delay()

    # -- lifecycle -----------------------------------------------------------------------------

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no promotion is under way; False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def starting(self) -> None:
        self.resume()

    @contextmanager
    def _working(self) -> Iterator[None]:
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    # -- passes --------------------------------------------------------------------------------

    def _ids(self, state: RequestState) -> list[int]:
        with self.db.read() as session:
            query = select(PromotionRequest.id).where(PromotionRequest.state == state.value)
            return list(session.execute(query.order_by(PromotionRequest.id)).scalars())

    def resume(self) -> list[int]:
        """Carry out the requests a stopped server left `promoting`; returns their ids."""
        done = []
        for request_id in self._ids(RequestState.PROMOTING):
            if self._stop.is_set():
                break
            log.info("resuming the promotion of request %s", request_id)
            with self._working():
                self._carry_out(request_id)
            done.append(request_id)
        return done

    def tick(self) -> list[int]:
        """Claim and carry out every approved request; returns the ids this worker carried out."""
        done = []
        for request_id in self._ids(RequestState.APPROVED):
            if self._stop.is_set():
                break
            with self._working():
                if not self._claim(request_id):
                    continue  # another worker took it
                self._carry_out(request_id)
            done.append(request_id)
        return done

    # -- one request ---------------------------------------------------------------------------

    def _claim(self, request_id: int) -> bool:
        with self.db.write() as session:
            request = session.get(PromotionRequest, request_id)
            if request is None or request.state != RequestState.APPROVED.value:
                return False
            request.state = RequestState.PROMOTING.value
            audit.record(
                session,
                actor=SYSTEM,
                action="request.promoting",
                environment=request.target_env,
                subject=f"request:{request_id}",
                payload={"model": request.model_name, "version": request.source_version, "from": request.source_env},
            )
        return True

    def _carry_out(self, request_id: int) -> None:
        try:
            spec = self._spec(request_id)
            copied = self.copier.promote(spec)
        except Exception as exc:
            self._failed(request_id, exc)
            return
        if self._delay_s:
            self._stop.wait(self._delay_s)
        files: Path | None = None
        try:
            files = self._copy_profile(spec, copied)
            self._record(request_id, spec, copied)
        except Exception as exc:
            if self._stop.is_set():  # the database is going away with the server: resume adopts the copy
                log.warning("request %s: stopped before its record was written; resumed at the next start", request_id)
                return
            if files is not None:
                shutil.rmtree(files, ignore_errors=True)
            try:
                self.copier.discard(copied)
            except Exception:
                log.exception("request %s: the copy in %s could not be deleted", request_id, copied.environment)
            self._failed(request_id, exc)
            return
        log.info(
            "request %s: %s:%s promoted to %s as version %s",
            request_id,
            spec.name,
            spec.source_version,
            spec.target_env,
            copied.version,
        )
        self.events.publish(VersionPromoted(request_id=request_id, environment=spec.target_env))

    def _spec(self, request_id: int) -> CopySpec:
        """What to copy, checked against the request: the approved version, its digest, its gate."""
        with self.db.read() as session:
            request = session.get(PromotionRequest, request_id)
            if request is None:
                raise NotFoundError(f"no promotion request {request_id}")
            source = session.get(ModelVersion, request.model_version_id)
            if source is None or (source.environment, source.name, source.version) != (
                request.source_env,
                request.model_name,
                request.source_version,
            ):
                raise ValidationError(
                    f"the request names version {request.source_version} of '{request.model_name}' in "
                    f"'{request.source_env}', and mlgate has no such record"
                )
            approved = request.evidence.get("digest")
            if approved is not None and approved != source.digest:
                raise ValidationError(
                    f"the version's digest is {source.digest}, the approved one {approved}: not promoted"
                )
            self.settings.environment(request.target_env)
            gate = self.settings.gate_from(request.source_env)
            if gate is None or gate.target != request.target_env:
                raise ValidationError(
                    f"no gate leads from '{request.source_env}' to '{request.target_env}' in mlgate.yaml"
                )
            return CopySpec(
                request_id=request_id,
                name=source.name,
                source_env=source.environment,
                source_version=source.version,
                source_model_uri=source.model_uri,
                digest=source.digest,
                target_env=request.target_env,
            )

    def _copy_profile(self, spec: CopySpec, copied: CopiedVersion) -> Path | None:
        """The baseline profile's files (profile.json, sample.csv), into the target's own folder."""
        source = version_dir(self.settings, spec.source_env, spec.name, spec.source_version)
        if not source.is_dir():
            return None
        target = version_dir(self.settings, spec.target_env, spec.name, copied.version)
        shutil.rmtree(target, ignore_errors=True)  # a leftover of an attempt that was undone
        shutil.copytree(source, target)
        return target

    def _record(self, request_id: int, spec: CopySpec, copied: CopiedVersion) -> None:
        """The target's version record and the request's `promoted` state, in one transaction."""
        with self.db.write() as session:
            request = session.get(PromotionRequest, request_id)
            if request is None:
                raise NotFoundError(f"no promotion request {request_id}")
            if request.state == RequestState.PROMOTED.value and request.target_version == copied.version:
                return  # recorded by an earlier attempt
            if request.state != RequestState.PROMOTING.value:
                raise ConflictError(f"request {request_id} is {request.state}, no longer promoting")
            source = session.get(ModelVersion, request.model_version_id)
            assert source is not None  # a foreign key
            _check_free(session, copied)
            row = _copy_record(source, request=request, copied=copied)
            session.add(row)
            session.flush()
            request.state = RequestState.PROMOTED.value
            request.target_version, request.target_version_id, request.failure = copied.version, row.id, None
            _audit_promotion(session, spec=spec, copied=copied, row=row, request_id=request_id)
            outbox.emit(
                session,
                self.settings,
                event="request.promoted",
                request=request,
                recipients={request.requested_by, request.author},
                base_url=self.base_url,
            )

    def _failed(self, request_id: int, exc: Exception) -> None:
        if self._stop.is_set():  # perhaps only because the tracking servers are stopping too
            log.warning("request %s: interrupted by the server stopping (%s); resumed at next start", request_id, exc)
            return
        if isinstance(exc, MlgateError):
            reason = exc.message
        else:
            log.exception("request %s: promotion failed", request_id, exc_info=exc)
            reason = f"{type(exc).__name__}: {exc}"
        try:
            fail(self.db, self.settings, request_id=request_id, reason=reason, base_url=self.base_url)
        except Exception:  # left `promoting`: the next start resumes it
            log.exception("request %s: could not be marked failed (%s)", request_id, reason)


def _promoted_card(card: str, request: PromotionRequest, copied: CopiedVersion) -> str:
    """The source's model card, and how this copy came to be: the gate it passed and who approved it."""
    approvers = sorted({d.actor for d in request.decisions if d.decision == "approve"})
    by = f", approved by {', '.join(approvers)}" if approvers else ""
    return (
        f"{card.rstrip()}\n\n## Promotion\n\n"
        f"Copied from `{request.source_env}` version {request.source_version} to `{copied.environment}` as version "
        f"{copied.version} through gate {request.gate} (promotion request {request.id}{by}). The copy's digest, "
        f"recomputed from `{copied.environment}`'s own store, is the source's: `sha256:{copied.digest}`."
    )


def _copy_record(source: ModelVersion, *, request: PromotionRequest, copied: CopiedVersion) -> ModelVersion:
    """The target's record of the copy: the source's digest, signature, lineage, profile and card, with
    `source_id` pointing back."""
    return ModelVersion(
        environment=copied.environment,
        name=copied.name,
        version=copied.version,
        digest=source.digest,
        run_id=source.run_id,
        model_uri=copied.model_uri,
        signature=source.signature,
        input_example=source.input_example,
        lineage=source.lineage,
        profile=source.profile,
        card=_promoted_card(source.card, request, copied),
        source_id=source.id,
        created_by=SYSTEM,
        created_at=utcnow(),
    )


def _audit_promotion(
    session: Session, *, spec: CopySpec, copied: CopiedVersion, row: ModelVersion, request_id: int
) -> None:
    """Two events: the model's version made in the target, and the request carried out."""
    audit.record(
        session,
        actor=SYSTEM,
        action="model.promote",
        environment=copied.environment,
        subject=f"model:{copied.name}:{copied.version}",
        payload={
            "digest": row.digest,
            "model_uri": row.model_uri,
            "source": f"{spec.source_env}:{spec.name}:{spec.source_version}",
            "request": request_id,
        },
    )
    audit.record(
        session,
        actor=SYSTEM,
        action="request.promote",
        environment=copied.environment,
        subject=f"request:{request_id}",
        payload={"target_version": copied.version, "digest": row.digest, "adopted": copied.adopted},
    )


def _check_free(session: Session, copied: CopiedVersion) -> None:
    taken = model_version(
        session, environment=copied.environment, name=copied.name, version=copied.version, deleted=True
    )
    if taken is not None:
        raise ConflictError(
            f"the '{copied.environment}' registry gave version {copied.version} of '{copied.name}', which mlgate "
            f"already records (digest {taken.digest[:12]}): was the registered model deleted in MLflow and "
            "created again?",
            details={"name": copied.name, "version": copied.version, "environment": copied.environment},
        )


def fail(db: Database, settings: Settings, *, request_id: int, reason: str, base_url: str) -> bool:
    """Mark an approved or promoting request `failed` with its reason, audited and announced; False if
    it was in another state (nothing is changed then)."""
    with db.write() as session:
        request = session.get(PromotionRequest, request_id)
        active = (RequestState.APPROVED.value, RequestState.PROMOTING.value)
        if request is None or request.state not in active:
            return False
        request.state, request.failure = RequestState.FAILED.value, reason
        audit.record(
            session,
            actor=SYSTEM,
            action="request.fail",
            environment=request.target_env,
            subject=f"request:{request_id}",
            payload={"reason": reason},
        )
        outbox.emit(
            session,
            settings,
            event="request.failed",
            request=request,
            recipients={request.requested_by, request.author},
            base_url=base_url,
            note=reason,
        )
    log.warning("request %s failed: %s", request_id, reason)
    return True


# -- where a version came from and went: the promotion chain ------------------------------------------


@dataclass(frozen=True)
class ChainLink:
    environment: str
    name: str
    version: int
    digest: str
    request_id: int | None  # the promotion that made this copy; None for the version registered first
    created_at: datetime


def chain(
    db: Database, env: str, name: str, version: int, *, visible: Callable[[str], bool] = lambda _env: True
) -> list[ChainLink]:
    """The version's promotion chain, from the version registered in development to its copies
    (following `source_id` both ways), in promotion order; only environments `visible` says."""
    with db.read() as session:
        here = model_version(session, environment=env, name=name, version=version)
        if here is None:
            raise NotFoundError(
                f"no version {version} of model '{name}' in '{env}'",
                details={"name": name, "version": version, "environment": env},
            )
        rows = promotion_chain(session, record=here)
        made_by = session.execute(
            select(PromotionRequest.target_version_id, PromotionRequest.id).where(
                PromotionRequest.target_version_id.in_([r.id for r in rows])
            )
        )
        requests = {version_id: request_id for version_id, request_id in made_by}
        return [
            ChainLink(
                environment=r.environment,
                name=r.name,
                version=r.version,
                digest=r.digest,
                request_id=requests.get(r.id),
                created_at=r.created_at,
            )
            for r in rows
            if visible(r.environment)
        ]
