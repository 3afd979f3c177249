"""The `retrain` action of a monitor: an alert starts the project's training job in the first environment
(`dev`), from the code snapshot that trained the serving version, on the configured data plus, if asked,
the window's production rows joined with their ground truth (registered as a new version of that data
asset); when the job succeeds, its model is registered as a candidate (which opens gate A), with a
lineage note naming the alert. At most one retraining per monitor per cooldown.

Crash-safe: each step is recorded on the alert (`retrain_state`: none -> starting -> submitted ->
registered, or skipped / failed; every move checked by the state machine of `mlgate.domain.retraining`),
and `sweep` carries every alert on from wherever it stands, so a job that succeeded while the server was
down is registered at the next tick. Every step may run twice:
the job carries its alert in its spec (`origin`), so an alert left `starting` by a crash takes the job
already submitted for it rather than a second one; registering finds the version already made and the
request already open. Within one server, an alert is worked on by one thread at a time (the API's run
and the periodic sweep both start retrainings).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.mlflow.base import ModelRegistry
from mlgate.adapters.monitoring import store
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Job, ModelVersion, Monitor, MonitorAlert, MonitorResult, utcnow
from mlgate.adapters.sql.queries import as_utc, chain_root, model_version
from mlgate.config import MonitorConfig, Settings
from mlgate.domain.jobs import DataRef, JobState
from mlgate.domain.permissions import SYSTEM, Role
from mlgate.domain.retraining import PENDING, RetrainState, transition
from mlgate.errors import MlgateError
from mlgate.services import audit
from mlgate.services.monitoring.runs import serving_version
from mlgate.services.registration import models, submission
from mlgate.services.training import data_assets, jobs
from mlgate.snapshot import pack_data

log = logging.getLogger(__name__)

MAX_PACKED_BYTES = 1 << 34
RECENT_JOBS = 200  # how far back (system training jobs in dev) a resumed alert looks for its job

_busy: set[int] = set()
_busy_lock = threading.Lock()


@contextmanager
def _exclusive(alert_id: int) -> Iterator[bool]:
    """True for the one thread of this process that may work on the alert now, False for the others."""
    with _busy_lock:
        mine = alert_id not in _busy
        _busy.add(alert_id)
    try:
        yield mine
    finally:
        if mine:
            with _busy_lock:
                _busy.discard(alert_id)


@dataclass(frozen=True)
class _Plan:
    alert_id: int
    monitor: str
    env: str
    endpoint: str
    spec: MonitorConfig
    model: str
    snapshot: str
    data: str
    label: str | None
    features: list[str]
    since: Any
    until: Any


def _root_record(db: Database, record_id: int) -> ModelVersion:
    with db.read() as session:
        record = session.get(ModelVersion, record_id)
        assert record is not None
        root = chain_root(session, record=record)
        session.expunge(root)
        return root


def _move(db: Database, alert_id: int, to: RetrainState, **fields: Any) -> None:
    """Move the alert's retraining to `to` (ConflictError unless the state machine allows it); set `fields`."""
    with db.write() as session:
        alert = session.get(MonitorAlert, alert_id)
        assert alert is not None
        alert.retrain_state = transition(alert.retrain_state, to)
        for key, value in fields.items():
            setattr(alert, key, value)


def _claim(db: Database, alert_id: int) -> tuple[MonitorAlert, Monitor, MonitorResult | None] | None:
    """Move a new alert of a `retrain` monitor to `starting` (once), or to `skipped` inside the cooldown."""
    with db.write() as session:
        alert = session.get(MonitorAlert, alert_id)
        if alert is None or alert.retrain_state != RetrainState.NONE:
            return None
        monitor = session.get(Monitor, alert.monitor_id)
        assert monitor is not None
        spec = MonitorConfig.model_validate(monitor.spec)
        if spec.action != "retrain":
            return None
        last = as_utc(monitor.last_retrain_at)
        cooldown = timedelta(hours=spec.retrain.cooldown_hours)
        if last is not None and utcnow() - last < cooldown:
            alert.retrain_state = transition(alert.retrain_state, RetrainState.SKIPPED)
            alert.retrain_note = f"a retraining started at {last.isoformat()}; the cooldown is {cooldown}"
            return None
        alert.retrain_state = transition(alert.retrain_state, RetrainState.STARTING)
        monitor.last_retrain_at = utcnow()
        result = session.get(MonitorResult, alert.opened_result_id) if alert.opened_result_id else None
        session.flush()
        for row in (alert, monitor, *([result] if result else [])):
            session.expunge(row)
        return alert, monitor, result


def _plan(
    db: Database, settings: Settings, alert: MonitorAlert, monitor: Monitor, result: MonitorResult | None
) -> _Plan:
    spec = MonitorConfig.model_validate(monitor.spec)
    reference = serving_version(db, settings, monitor.environment, monitor.endpoint)
    if reference is None:
        raise MlgateError(f"endpoint '{monitor.endpoint}' serves no version to retrain")
    root = _root_record(db, reference.record_id)
    lineage = root.lineage or {}
    snapshot = lineage.get("snapshot_sha256")
    if not snapshot:
        raise MlgateError(
            f"{root.name}:{root.version} has no code snapshot in its lineage: it was not trained by a job"
        )
    training = (lineage.get("training_data") or {}).get("ref")
    data = spec.retrain.data or (DataRef.parse(training).name if training else None)
    if data is None:
        raise MlgateError("no data to retrain on: set retrain.data, or train the model on a registered data asset")
    try:
        DataRef.parse(data)
    except ValueError as exc:
        raise MlgateError(f"retrain.data: {exc}") from exc
    features = [str(c["name"]) for c in (reference.profile or {}).get("features") or []] or [
        str(s["name"]) for s in (root.signature.get("inputs") or []) if s.get("name")
    ]
    return _Plan(
        alert_id=alert.id,
        monitor=monitor.name,
        env=monitor.environment,
        endpoint=monitor.endpoint,
        spec=spec,
        model=root.name,
        snapshot=str(snapshot),
        data=data,
        label=lineage.get("label"),
        features=features,
        since=as_utc(result.window_start) if result else None,
        until=as_utc(result.window_end) if result else None,
    )


def _with_window(db: Database, settings: Settings, plan: _Plan, dev: str) -> tuple[str, int | None, str]:
    """Register the configured data plus the window's labelled rows as a new version; (ref, version, note)."""
    import pandas as pd

    base = data_assets.resolve(db, dev, DataRef.parse(plan.data))
    if plan.label is None:
        return base.ref, None, "the training data has no label column: trained on the configured data alone"
    labelled = store.labelled(
        settings.environment(plan.env).monitoring_dir, plan.endpoint, since=plan.since, until=plan.until
    )
    if labelled.num_rows == 0:
        return base.ref, None, "no labelled production rows in the window: trained on the configured data alone"
    columns = [*plan.features, plan.label]
    window = pd.DataFrame({f: labelled[store.FEATURE_PREFIX + f].to_pylist() for f in plan.features})
    window[plan.label] = labelled["label"].to_pylist()
    environment = settings.environment(dev)
    with tempfile.TemporaryDirectory(prefix="mlgate-retrain-") as tmp:
        folder = data_assets.materialize(environment, base, Path(tmp) / "base")
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        reader = pd.read_csv if base.format == "csv" else pd.read_parquet
        frame = pd.concat([reader(path) for path in files], ignore_index=True)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise MlgateError(f"{base.ref} lacks the column(s) {', '.join(missing)}")
        original = frame[columns]
        window[plan.label] = window[plan.label].astype(original[plan.label].dtype, errors="ignore")
        merged = pd.concat([original, window[columns]], ignore_index=True)
        out = Path(tmp) / "out" / f"{base.name}.csv"
        out.parent.mkdir()
        merged.to_csv(out, index=False, lineterminator="\n")
        made, _ = data_assets.register(
            db,
            environment,
            actor=SYSTEM,
            name=base.name,
            archive=pack_data(out, limit=MAX_PACKED_BYTES),
            source=f"{base.ref} + {labelled.num_rows} labelled rows of {plan.env}/{plan.endpoint} "
            f"(monitor {plan.monitor}, alert {plan.alert_id})",
        )
    return made.ref, made.version, f"{base.ref} plus {labelled.num_rows} labelled production rows"


def _starting(db: Database, alert_id: int) -> tuple[MonitorAlert, Monitor, MonitorResult | None] | None:
    """An alert whose retraining was claimed but whose job was never recorded (the server stopped between)."""
    with db.read() as session:
        alert = session.get(MonitorAlert, alert_id)
        if alert is None or alert.retrain_state != RetrainState.STARTING:
            return None
        monitor = session.get(Monitor, alert.monitor_id)
        assert monitor is not None
        result = session.get(MonitorResult, alert.opened_result_id) if alert.opened_result_id else None
        for row in (alert, monitor, *([result] if result else [])):
            session.expunge(row)
        return alert, monitor, result


def _job_for(db: Database, env: str, alert_id: int) -> jobs.JobView | None:
    """The training job already submitted for the alert, if any (its spec names the alert)."""
    with db.read() as session:
        recent = session.execute(
            select(Job)
            .where(Job.environment == env, Job.kind == "train", Job.requested_by == SYSTEM)
            .order_by(Job.id.desc())
            .limit(RECENT_JOBS)
        ).scalars()
        for job in recent:
            if ((job.spec or {}).get("origin") or {}).get("alert") == alert_id:
                return jobs.view(job)
    return None


def start(db: Database, settings: Settings, alert_id: int) -> None:
    """Start the retraining an alert asks for (a no-op unless the alert is new and its monitor retrains)."""
    with _exclusive(alert_id) as mine:
        claimed = _claim(db, alert_id) if mine else None
        if claimed is not None:
            _submit(db, settings, *claimed)


def resume(db: Database, settings: Settings, alert_id: int) -> None:
    """Carry on an alert left `starting`: record the job already submitted for it, or submit it now."""
    with _exclusive(alert_id) as mine:
        loaded = _starting(db, alert_id) if mine else None
        if loaded is not None:
            _submit(db, settings, *loaded)


def _submit(
    db: Database, settings: Settings, alert: MonitorAlert, monitor: Monitor, result: MonitorResult | None
) -> None:
    """Submit the claimed alert's training job (unless one is already there) and record it on the alert."""
    alert_id, dev = alert.id, settings.env_names[0]
    try:
        plan = _plan(db, settings, alert, monitor, result)
        data = DataRef.parse(plan.data)
        job = _job_for(db, dev, alert_id)
        if job is not None:
            note = f"job {job.id} was submitted before a restart; taken up again"
        else:
            version, note = data.version, "trained on the configured data"
            if plan.spec.retrain.include_production_window:
                _, made, note = _with_window(db, settings, plan, dev)
                version = made if made is not None else version
            job = jobs.submit_train(
                db,
                settings,
                actor=SYSTEM,
                env=dev,
                snapshot_sha256=plan.snapshot,
                versions={data.name: version} if version is not None else None,
                origin={"monitor": monitor.name, "environment": monitor.environment, "alert": alert_id},
                acts_as=Role.DATA_SCIENTIST,  # what it does in dev is what a data scientist does
            )
    except MlgateError as exc:
        _move(db, alert_id, RetrainState.FAILED, retrain_note=exc.message)
        log.warning("retraining for alert %s not started: %s", alert_id, exc.message)
        return
    pinned = job.data_versions.get(data.name)
    ref = f"{data.name}@{pinned}" if pinned is not None else plan.data
    with db.write() as session:
        row = session.get(MonitorAlert, alert_id)
        assert row is not None
        row.retrain_state = transition(row.retrain_state, RetrainState.SUBMITTED)
        row.retrain_job_id, row.retrain_data = job.id, ref
        row.retrain_note = note
        audit.record(
            session,
            actor=SYSTEM,
            action="monitor.retrain",
            environment=dev,
            subject=f"job:{job.id}",
            payload={"monitor": monitor.name, "environment": monitor.environment, "alert": alert_id, "data": ref},
        )


RegistryFor = Callable[[str], ModelRegistry]


def _served_record_id(session: Session, env: str, served: str | None) -> int | None:
    """The record of the version a monitor's result names ("name:version" in `env`)."""
    name, _, version = (served or "").partition(":")
    if not name or not version.isdigit():
        return None
    record = model_version(session, environment=env, name=name, version=int(version), deleted=True)
    return record.id if record is not None else None


def _finish(db: Database, settings: Settings, alert_id: int, registry_for: RegistryFor, base_url: str) -> None:
    """A submitted retraining whose job ended: register its model (opening gate A), or record the failure."""
    dev = settings.env_names[0]
    with db.read() as session:
        alert = session.get(MonitorAlert, alert_id)
        assert alert is not None and alert.retrain_job_id is not None
        job = session.get(Job, alert.retrain_job_id)
        monitor = session.get(Monitor, alert.monitor_id)
        assert job is not None and monitor is not None
        state, run_ids = JobState(job.state), list(job.run_ids or [])
        model_name, source_id = None, None
        if alert.opened_result_id is not None:
            result = session.get(MonitorResult, alert.opened_result_id)
            model_name = result.model.partition(":")[0] if result and result.model else None
            source_id = _served_record_id(session, monitor.environment, result.model if result else None)
        where = f"monitor {monitor.name} ({monitor.environment}/{monitor.endpoint})"
    if not state.finished:
        return
    if state is not JobState.SUCCEEDED or not run_ids or model_name is None:
        why = f"job {job.id} {state.value}" if state is not JobState.SUCCEEDED else f"job {job.id} logged no run"
        _move(db, alert_id, RetrainState.FAILED, retrain_note=why)
        return
    note = f"retrained by {where} for alert {alert_id}"
    try:
        done = submission.register_and_request(
            db,
            settings,
            registry_for(dev),
            actor=SYSTEM,
            env=dev,
            # its authors are those of the version it was retrained from: they may not approve it
            request=models.RegisterRequest(name=model_name, run_id=run_ids[0], notes=(note,), retrained_from=source_id),
            base_url=base_url,
            resuming=True,  # registered, or its request opened, before a restart: those are the ones
        )
    except MlgateError as exc:
        _move(db, alert_id, RetrainState.FAILED, retrain_note=f"registering job {job.id}'s model: {exc.message}")
        return
    _move(db, alert_id, RetrainState.REGISTERED, candidate_version=done.version.version, request_id=done.request_id)


def sweep(db: Database, settings: Settings, *, registry_for: RegistryFor, base_url: str) -> None:
    """Carry every alert's retraining on: start new ones, resume interrupted ones, register the models of
    succeeded jobs."""
    with db.read() as session:
        pending = session.execute(
            select(MonitorAlert.id, MonitorAlert.retrain_state, Monitor.spec)
            .join(Monitor, Monitor.id == MonitorAlert.monitor_id)
            .where(MonitorAlert.retrain_state.in_([state.value for state in PENDING]))
            .order_by(MonitorAlert.id)
        ).all()
    for alert_id, state, spec in pending:
        if state == RetrainState.NONE and (spec or {}).get("action") != "retrain":
            continue  # a notify monitor's alerts stay `none`: no write transaction for each, every tick
        try:
            if state == RetrainState.NONE:
                start(db, settings, alert_id)
            elif state == RetrainState.STARTING:
                resume(db, settings, alert_id)
            else:
                _finish(db, settings, alert_id, registry_for, base_url)
        except Exception:
            log.exception("retraining for alert %s failed", alert_id)
