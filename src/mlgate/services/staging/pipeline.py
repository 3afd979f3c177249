"""The staging pipeline: a version that arrives in staging gets its gate B request and its checks.

A periodic sweep (idempotent, so nothing is lost when the server stops half-way): every version in
staging that came through gate A and has no request at the gate out of staging gets one (opened by
`system`, requested by gate A's requester); every open request whose required checks have no record
yet gets them asked for; every check record waiting to start is started (as a job, or on a thread of
this server for the endpoint tests and model validation, whose models score in the sandbox); every
record whose job has ended gets its result.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import and_, select
from sqlalchemy.orm import aliased

from mlgate.adapters.mlflow.base import TrackingServers
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import CheckRecord, ModelVersion, PromotionRequest
from mlgate.config import Settings
from mlgate.domain.environments import EnvironmentKind
from mlgate.domain.gates import RequestState
from mlgate.domain.permissions import SYSTEM
from mlgate.errors import ConflictError, MlgateError
from mlgate.services.promotion import requests
from mlgate.services.release.serving import Serving
from mlgate.services.staging import checks, endpoint_tests, validation
from mlgate.services.worker import Worker

log = logging.getLogger(__name__)

SWEEP_S = 1.0


class StagingPipeline(Worker):
    """Opens gate B requests for versions arriving in staging and runs their checks; checks already
    running at stop finish as jobs."""

    name = "staging-pipeline"
    interval_s = SWEEP_S
    stop_wait_s = 10.0

    def __init__(
        self, settings: Settings, db: Database, serving: Serving, tracking: TrackingServers, *, base_url: str
    ) -> None:
        self.settings = settings
        self.db = db
        self.serving = serving
        self.tracking = tracking
        self.base_url = base_url
        super().__init__()
        # Records being started (or, for endpoint tests, run) by a thread of this server.
        self._busy: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        # One endpoint test at a time: two candidates in one slot would answer for each other. Model
        # validation takes it too: both place a version's folder (`Serving.place`, which replaces a
        # folder another thread is placing at the same time), and validation's sandbox reads it.
        self._endpoint_lock = threading.Lock()

    def tick(self) -> None:
        """One sweep."""
        for env in self.settings.environments:
            if env.kind is EnvironmentKind.STAGING:
                self._open_requests(env.name)
                self._ask_missing(env.name)
        self._start_waiting()
        self._collect()

    # -- gate B requests ---------------------------------------------------------------------------

    def _open_requests(self, env: str) -> None:
        gate_out = self.settings.gate_from(env)
        if gate_out is None or not gate_out.auto_request:
            return
        arrived, onward = aliased(PromotionRequest), aliased(PromotionRequest)
        with self.db.read() as session:
            rows = session.execute(
                select(ModelVersion.name, ModelVersion.version, arrived.requested_by)
                .join(arrived, arrived.target_version_id == ModelVersion.id)
                .outerjoin(
                    onward,
                    and_(onward.model_version_id == ModelVersion.id, onward.target_env == gate_out.target),
                )
                .where(
                    ModelVersion.environment == env,
                    arrived.state == RequestState.PROMOTED.value,
                    onward.id.is_(None),
                )
            ).all()
        for name, version, requester in rows:
            try:
                requests.open_request(
                    self.db,
                    self.settings,
                    actor=SYSTEM,
                    requested_by=requester,
                    source=env,
                    name=name,
                    version=version,
                    base_url=self.base_url,
                )
            except ConflictError:
                continue  # opened meanwhile
            log.info("opened the gate %s request of %s:%s for %s", gate_out.name, name, version, requester)

    def _ask_missing(self, env: str) -> None:
        known = checks.configured(self.settings)
        with self.db.read() as session:
            open_requests = session.execute(
                select(PromotionRequest, ModelVersion)
                .join(ModelVersion, ModelVersion.id == PromotionRequest.model_version_id)
                .where(PromotionRequest.source_env == env, PromotionRequest.state == RequestState.OPEN.value)
            ).all()
            todo = []
            for request, version in open_requests:
                have = set(
                    session.execute(
                        select(CheckRecord.name).where(CheckRecord.model_version_id == version.id)
                    ).scalars()
                )
                wanted = list(dict.fromkeys([*known, *request.required_checks]))
                missing = [n for n in wanted if n not in have]
                if missing:
                    todo.append((version.id, version.name, version.version, missing))
        for version_id, name, number, missing in todo:
            unknown = [n for n in missing if n not in known]
            if unknown:
                checks.record_unknown(self.db, model_version_id=version_id, names=unknown)
            runnable = [n for n in missing if n in known]
            if runnable:
                checks.request_runs(
                    self.db, self.settings, actor=SYSTEM, env=env, name=name, version=number, only=runnable
                )

    # -- starting and collecting checks -----------------------------------------------------------

    def _start_waiting(self) -> None:
        for pending in checks.waiting(self.db):
            with self._lock:
                if pending.record_id in self._busy:
                    continue
                thread = threading.Thread(
                    target=self._start_one, args=(pending,), name=f"check-{pending.record_id}", daemon=True
                )
                self._busy[pending.record_id] = thread
                thread.start()

    def _start_one(self, pending: checks.Pending) -> None:
        try:
            commands = self.settings.checks.commands
            if pending.name in commands:
                checks.start_command(self.db, self.settings, pending, commands[pending.name], base_url=self.base_url)
            elif pending.name == checks.MODEL_VALIDATION:
                self._start_validation(pending)
            elif pending.name == checks.ENDPOINT_TESTS:
                self._endpoint_tests(pending)
            else:
                self._finish(pending, checks.ERROR, f"no check named '{pending.name}' is configured under `checks:`")
        except Exception as exc:  # a check that cannot start is an error on its record, never a stuck one
            message = exc.message if isinstance(exc, MlgateError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, MlgateError):
                log.exception("check %s (record %s) could not start", pending.name, pending.record_id)
            self._finish(pending, checks.ERROR, f"could not run: {message}")
        finally:
            with self._lock:
                self._busy.pop(pending.record_id, None)

    def _finish(self, pending: checks.Pending, status: str, summary: str, log_excerpt: str = "") -> None:
        checks.finish(
            self.db,
            self.settings,
            pending.record_id,
            status=status,
            summary=summary,
            log_excerpt=log_excerpt,
            base_url=self.base_url,
        )

    def _start_validation(self, pending: checks.Pending) -> None:
        """Judged here (`services.staging.validation`): the models only score features, each in its sandbox."""
        with self._endpoint_lock:
            outcome = validation.run(self.db, self.settings, self.serving, self.tracking, pending)
        checks.finish(
            self.db,
            self.settings,
            pending.record_id,
            status=outcome.status,
            summary=outcome.summary,
            log_excerpt="\n".join(outcome.log),
            artifacts=outcome.artifacts,
            base_url=self.base_url,
        )

    def _endpoint_tests(self, pending: checks.Pending) -> None:
        with self._endpoint_lock:
            outcome = endpoint_tests.run(
                self.db,
                self.settings,
                self.serving,
                self.settings.checks.endpoint_tests,
                env=pending.environment,
                model_version_id=pending.model_version_id,
            )
        summary = "; ".join(outcome.problems) if outcome.problems else "; ".join(outcome.log[-3:])
        self._finish(pending, checks.PASSED if outcome.passed else checks.FAILED, summary, "\n".join(outcome.log))

    def _collect(self) -> None:
        for record_id, job_id in checks.with_jobs(self.db):
            try:
                checks.collect(self.db, self.settings, record_id, job_id, base_url=self.base_url)
            except Exception:
                log.exception("collecting check record %s (job %s) failed", record_id, job_id)
