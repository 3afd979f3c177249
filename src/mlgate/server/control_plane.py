"""The composition root: the one place that builds the control plane's parts from the settings and wires them.

`ControlPlane` builds the control database, the backends (from `adapters.registry`, unless the caller
passes its own), the event hub and every background worker, subscribes the workers to the events that
concern them, and starts and stops them in order. `interfaces.api.app.create_app` only wraps it in a
FastAPI application. Reading `_build_workers` and `_wire` shows every background activity of the server
and what sets each one going.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlgate.adapters import registry
from mlgate.adapters.execution.base import ExecutionBackend
from mlgate.adapters.mlflow.base import TrackingServers
from mlgate.adapters.mlflow.registry import MlflowRegistry
from mlgate.adapters.serving.base import ServingBackend
from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.domain.clock import SYSTEM_CLOCK, Clock
from mlgate.domain.events import AlertFired, ChecksRequested, JobEnded, RequestApproved, VersionPromoted
from mlgate.server.record import ServerRecorder
from mlgate.services import audit_integrity, audit_keys
from mlgate.services.events import Hub
from mlgate.services.monitoring import monitors, retraining, runs, store_upkeep
from mlgate.services.notifications.delivery import DeliveryWorker
from mlgate.services.promotion import requests
from mlgate.services.promotion.copying import PromotionWorker
from mlgate.services.release.rollouts import RolloutWorker
from mlgate.services.release.serving import Serving
from mlgate.services.staging.pipeline import StagingPipeline
from mlgate.services.training.job_runner import JobRunner
from mlgate.services.worker import Periodic, Worker

log = logging.getLogger(__name__)

EXPIRY_SWEEP_S = 5.0
MONITOR_TICK_S = 5.0  # schedules are checked this often
AUDIT_CHECKPOINT_TICK_S = 10.0  # whether a checkpoint of the audit chain is due is asked this often
RETRAINING_TICK_S = 5.0  # a retraining's job is followed this often (and at once when an alert fires)


@dataclass
class Backends:
    """One implementation per seam; by default the ones the config names."""

    tracking: TrackingServers
    execution: ExecutionBackend
    serving: ServingBackend

    @classmethod
    def chosen(
        cls,
        settings: Settings,
        *,
        tracking: TrackingServers | None = None,
        execution: ExecutionBackend | None = None,
        serving: ServingBackend | None = None,
    ) -> Backends:
        return cls(
            tracking=tracking or registry.tracking_servers(settings),
            execution=execution or registry.execution_backend(settings),
            serving=serving or registry.serving_backend(settings),
        )


@dataclass
class Workers:
    """The server's background workers, in the order they start (they stop in reverse)."""

    runner: JobRunner
    promotion: PromotionWorker
    delivery: DeliveryWorker
    expiry: Periodic
    pipeline: StagingPipeline
    rollouts: RolloutWorker
    monitors: Periodic
    retraining: Periodic
    checkpoints: Periodic
    monitoring_store: Periodic

    def in_order(self) -> list[Worker]:
        return [
            self.runner,
            self.promotion,
            self.delivery,
            self.expiry,
            self.pipeline,
            self.rollouts,
            self.monitors,
            self.retraining,
            self.checkpoints,
            self.monitoring_store,
        ]


class ControlPlane:
    """Everything one `mlgate server` runs behind its HTTP interface."""

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str,
        backends: Backends,
        clock: Clock = SYSTEM_CLOCK,
        record_server: bool = False,
    ) -> None:
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self.audit_keys = audit_keys.load_or_create(settings.home)
        self.db = Database(settings.database_url, audit_mac_key=self.audit_keys.mac_key)
        self.backends = backends
        self.clock = clock
        self.hub = Hub()
        self.serving = Serving(settings, self.db, backends.serving, backends.tracking.upstream)
        self.workers = self._build_workers()
        self._wire()
        self._recorder = ServerRecorder(settings, base_url=self.base_url, tracking=backends.tracking)
        self._record_server = record_server

    @property
    def tracking(self) -> TrackingServers:
        return self.backends.tracking

    def all_workers(self) -> list[Worker]:
        """Every background worker, the serving hosts' supervisor included, in start order."""
        return [self.serving, *self.workers.in_order()]

    def _build_workers(self) -> Workers:
        settings, db, url, tracking = self.settings, self.db, self.base_url, self.backends.tracking
        return Workers(
            runner=JobRunner(settings=settings, db=db, backend=self.backends.execution, base_url=url, events=self.hub),
            promotion=PromotionWorker(settings, db, tracking, url, events=self.hub),
            delivery=DeliveryWorker(settings=settings, db=db),
            expiry=Periodic(
                "request-expiry",
                lambda: requests.expire_due(db, settings, base_url=url, now=self.clock.now()),
                interval_s=EXPIRY_SWEEP_S,
            ),
            pipeline=StagingPipeline(settings, db, self.serving, tracking, base_url=url),
            rollouts=RolloutWorker(settings, db, self.serving, tracking, base_url=url),
            monitors=Periodic(
                "monitors",
                lambda: runs.run_due(db, settings, base_url=url, now=self.clock.now(), events=self.hub),
                interval_s=MONITOR_TICK_S,
            ),
            retraining=Periodic(
                "retraining",
                lambda: retraining.sweep(
                    db, settings, registry_for=lambda env: MlflowRegistry(tracking.upstream(env), env=env), base_url=url
                ),
                interval_s=RETRAINING_TICK_S,
            ),
            checkpoints=Periodic(
                "audit-checkpoints",
                lambda: audit_integrity.take_checkpoint(db, settings, self.audit_keys, now=self.clock.now()),
                interval_s=AUDIT_CHECKPOINT_TICK_S,
            ),
            monitoring_store=Periodic(
                "monitoring-store",
                lambda: store_upkeep.sweep(db, settings, now=self.clock.now()),
                interval_s=settings.raw.monitoring.upkeep_interval_s,
            ),
        )

    def _wire(self) -> None:
        """Who acts on what: each event wakes the workers that carry the change on."""
        workers, hub = self.workers, self.hub
        hub.subscribe(RequestApproved, lambda _: workers.promotion.wake())
        hub.subscribe(VersionPromoted, lambda _: workers.pipeline.wake())
        hub.subscribe(VersionPromoted, lambda _: workers.rollouts.wake())
        hub.subscribe(ChecksRequested, lambda _: workers.pipeline.wake())
        hub.subscribe(AlertFired, lambda _: workers.retraining.wake())
        hub.subscribe(JobEnded, lambda _: workers.retraining.wake())

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate, then start the tracking servers' supervision, the serving hosts and the workers."""
        if migrate.upgrade(self.db):
            log.info("control database migrated to %s", migrate.head_revision())
        if self.audit_keys.created:  # a home from before the audit keys: its events are sealed, this once
            sealed = audit_integrity.seal_unauthenticated(self.db, self.audit_keys)
            log.info("audit log: %d earlier events sealed with the new key", sealed)
        self.tracking.start(on_spawn=self._write_record)
        self.serving.start()
        monitors.ensure_declared(self.db, self.settings)
        for worker in self.workers.in_order():
            worker.start()
        self._write_record()

    def stop(self) -> None:
        for worker in reversed(self.workers.in_order()):
            worker.stop()
        self.serving.stop()  # the hosts keep serving: `mlgate stop` stops them
        self.tracking.stop()
        if self._record_server:
            self._recorder.remove()
        self.db.dispose()

    def _write_record(self) -> None:
        if self._record_server:
            self._recorder.write()
