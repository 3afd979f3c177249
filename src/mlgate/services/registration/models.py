"""Model versions: registering a run's logged model in the development registry, with mlgate's record.

The record is what the gates and monitoring rely on: a content digest over the model's files, its
signature and input example, lineage (run, code snapshot, data versions), a baseline profile and a
model card. Registration is ordered so that nothing is half-registered: everything that can fail on
bad input (finding, downloading, digesting, profiling) happens first; then the MLflow version is
created; then mlgate's row and audit event are written in one transaction, and the MLflow version is
deleted again if that fails. The baseline's predictions come from the sandbox (`services.registration.scoring`):
this process downloads, digests and reads the model's files as data, and never loads the model.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.mlflow.base import ModelRegistry
from mlgate.adapters.mlflow.registry import LoggedModel, ModelFolder, RunRecord, read_model_folder
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, utcnow
from mlgate.adapters.sql.queries import model_version
from mlgate.config import Environment, Settings
from mlgate.domain.audit import canonical_time
from mlgate.domain.digest import tree_digest
from mlgate.domain.environments import EnvironmentKind
from mlgate.domain.jobs import DataRef
from mlgate.domain.model_card import CardFacts, render
from mlgate.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from mlgate.services import audit
from mlgate.services.registration import authors, baseline, model_lineage
from mlgate.services.registration.scoring import Predictions, SandboxScorer

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOGGED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
DESCRIPTION_TAG = "mlflow.note.content"
log = logging.getLogger(__name__)

HOW_TO_SIGN = (
    "log it with a signature: `from mlflow.models import infer_signature`, then "
    "`log_model(..., signature=infer_signature(X, predictions))`"
)


@dataclass(frozen=True)
class RegisterRequest:
    name: str
    run_id: str | None = None
    model: str = "model"  # the logged model's name within the run
    model_uri: str | None = None  # models:/m-..., instead of finding it by run and name
    data: str | None = None  # NAME or NAME@VERSION of the training data
    label: str | None = None
    notes: tuple[str, ...] = ()  # recorded in the lineage (automation says why it registered)
    retrained_from: int | None = None  # the record id of the version a retraining started from


@dataclass(frozen=True)
class ModelVersionView:
    environment: str
    name: str
    version: int
    digest: str
    run_id: str | None
    model_uri: str
    signature: dict[str, Any]
    input_example: Any
    lineage: dict[str, Any]
    profile: dict[str, Any] | None
    card: str
    created_by: str
    created_at: datetime
    notes: list[str] = field(default_factory=list)


def _view(row: ModelVersion) -> ModelVersionView:
    return ModelVersionView(
        environment=row.environment,
        name=row.name,
        version=row.version,
        digest=row.digest,
        run_id=row.run_id,
        model_uri=row.model_uri,
        signature=dict(row.signature),
        input_example=row.input_example,
        lineage=dict(row.lineage),
        profile=dict(row.profile) if row.profile is not None else None,
        card=row.card,
        created_by=row.created_by,
        created_at=row.created_at,
        notes=list((row.lineage or {}).get("notes") or []),
    )


def version_dir(settings: Settings, env: str, name: str, version: int) -> Path:
    """Where a version's profile.json and sample.csv live."""
    return settings.env_dir(env) / "models" / name / str(version)


# -- validation ---------------------------------------------------------------------------------------


def _check(request: RegisterRequest, env: Environment) -> DataRef | None:
    if env.kind is not EnvironmentKind.DEVELOPMENT:
        raise PermissionDeniedError(
            f"models are registered only in the development environment; '{env.name}' gets versions by promotion",
            details={"environment": env.name},
        )
    if not MODEL_NAME.match(request.name):
        raise ValidationError(
            f"invalid model name '{request.name}': expected letters, digits, '.', '_' or '-' (at most 128)",
            details={"name": request.name},
        )
    if request.run_id is None and request.model_uri is None:
        raise ValidationError("say which model to register: a run id (and --model), or a models:/m-... URI")
    if request.run_id is not None and not RUN_ID.match(request.run_id):
        raise ValidationError(f"invalid run id '{request.run_id}'", details={"run_id": request.run_id})
    if not LOGGED_NAME.match(request.model):
        raise ValidationError(f"invalid logged model name '{request.model}'", details={"model": request.model})
    if request.data is None:
        return None
    try:
        return DataRef.parse(request.data)
    except ValueError as exc:
        raise ValidationError(f"--data: {exc}", details={"data": request.data}) from None


def _logged_model(registry: ModelRegistry, request: RegisterRequest) -> tuple[LoggedModel, RunRecord | None]:
    """The logged model to register and the run that produced it (None for a model without one)."""
    if request.model_uri is not None:
        model = registry.logged_model(request.model_uri)
        if request.run_id is not None and model.source_run_id != request.run_id:
            raise ValidationError(
                f"{model.uri} was logged by run '{model.source_run_id}', not by run '{request.run_id}'",
                details={"model_uri": model.uri, "run_id": request.run_id},
            )
        run_id = request.run_id or model.source_run_id
        return model, registry.run(run_id) if run_id else None
    assert request.run_id is not None
    run = registry.run(request.run_id)
    if run.deleted:
        raise ValidationError(f"run '{run.run_id}' is deleted", details={"run_id": run.run_id})
    logged = registry.logged_models_of(run)
    named = [m for m in logged if m.name == request.model]
    if not named:
        others = ", ".join(sorted({m.name for m in logged}))
        found = f"it logged: {others}" if others else "it logged no model (MLflow 3: `log_model(model, name=...)`)"
        raise NotFoundError(
            f"run '{run.run_id}' has no logged model named '{request.model}'; {found}",
            details={"run_id": run.run_id, "model": request.model, "logged": sorted({m.name for m in logged})},
        )
    return named[0], run  # the newest, if the run logged the same name twice


def _signature(folder: ModelFolder, model: LoggedModel) -> dict[str, Any]:
    if folder.signature is None:
        raise ValidationError(
            f"the model {model.uri} ('{model.name}') has no signature, and mlgate registers only models "
            f"that declare their inputs: {HOW_TO_SIGN}",
            details={"model_uri": model.uri},
        )
    return folder.signature


# -- registration -----------------------------------------------------------------------------------------


def _same_model(session: Session, env: str, name: str, model_uri: str, digest: str) -> ModelVersion | None:
    """The live version `name` already has for these bytes of this logged model, if any."""
    return session.execute(
        select(ModelVersion)
        .where(
            ModelVersion.environment == env,
            ModelVersion.name == name,
            ModelVersion.model_uri == model_uri,
            ModelVersion.digest == digest,
            ModelVersion.deleted_at.is_(None),  # registered again after a deletion: a new version
        )
        .order_by(ModelVersion.version)
        .limit(1)
    ).scalar_one_or_none()


def _check_free(session: Session, env: str, name: str, version: int) -> None:
    taken = model_version(session, environment=env, name=name, version=version, deleted=True)
    if taken is not None:
        raise ConflictError(
            f"the '{env}' MLflow registry gave version {version} of '{name}', which mlgate already records "
            f"(digest {taken.digest[:12]}): was the registered model deleted in MLflow and created again?",
            details={"name": name, "version": version},
        )


def _undo(registry: ModelRegistry, files: list[Path], *, name: str, version: int, drop_model: bool) -> None:
    """Compensate a registration that failed after its MLflow version was created."""
    for folder in files:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        registry.delete_version(name=name, version=version, drop_model=drop_model)
    except Exception:  # the original failure is the one to report; this one goes to the log
        log.exception("could not delete version %s of '%s' after a failed registration", version, name)


def _write_files(folder: Path, made: baseline.Baseline) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # a leftover of an attempt that was undone
    folder.mkdir(parents=True)
    (folder / baseline.SAMPLE_FILE).write_bytes(made.sample_csv)
    (folder / baseline.PROFILE_FILE).write_text(json.dumps(made.profile, indent=2, sort_keys=True))


@dataclass(frozen=True)
class _Prepared:
    """Everything a registration records, worked out before anything is written."""

    model: LoggedModel
    run: RunRecord | None
    digest: str
    signature: dict[str, Any]
    input_example: Any
    lineage: dict[str, Any]
    made: baseline.Baseline | None
    description: str | None


def _prepare(
    db: Database, registry: ModelRegistry, environment: Environment, request: RegisterRequest, scorer: SandboxScorer
) -> _Prepared | ModelVersionView:
    """Find, download, check, digest and profile the model; the existing version if it has one."""
    env = environment.name
    asked = _check(request, environment)
    model, run = _logged_model(registry, request)
    if not model.status.upper().endswith("READY"):  # READY, or LOGGED_MODEL_READY as REST spells it
        raise ValidationError(f"{model.uri} is not ready (status {model.status})", details={"model_uri": model.uri})
    job = model_lineage.job_of(db, env, run)
    training = model_lineage.training_data(db, env, asked=asked, job=job)
    notes: list[str] = list(request.notes)
    with tempfile.TemporaryDirectory(prefix="mlgate-model-") as tmp:
        folder = registry.download(model, Path(tmp))
        described = read_model_folder(folder)
        signature = _signature(described, model)
        digest = tree_digest(folder)
        with db.read() as session:
            existing = _same_model(session, env, request.name, model.uri, digest)
            if existing is not None:
                return _view(existing)
        if described.input_example_note:
            notes.append(described.input_example_note)
        made = None
        if training is None:
            notes.append("no baseline profile: the run recorded no training data asset and none was given with --data")
        else:

            def predict(model_folder: Path, frame: Any) -> Predictions:
                return scorer(model_folder, frame, what=f"the model {model.uri} ('{model.name}')")

            made = baseline.make_baseline(
                environment,
                training,
                inputs=[str(s["name"]) for s in signature.get("inputs") or [] if s.get("name")],
                label=request.label or (job.label if job else None),
                model_folder=folder,
                predict=predict,
            )
    return _Prepared(
        model=model,
        run=run,
        digest=digest,
        signature=signature,
        input_example=described.input_example,
        lineage=model_lineage.lineage(
            model=model, run=run, job=job, training=training, label=made.label if made else None, notes=notes
        ),
        made=made,
        description=(run.tags.get(DESCRIPTION_TAG) if run else None) or None,
    )


def _authors(
    session: Session, prepared: _Prepared, *, env: str, actor: str, retrained_from: int | None
) -> authors.Authors:
    return authors.of_new_version(
        session,
        env=env,
        run_id=prepared.run.run_id if prepared.run else None,
        model_id=prepared.model.model_id,
        job_id=prepared.lineage.get("job_id"),
        registrar=actor,
        retrained_from=session.get(ModelVersion, retrained_from) if retrained_from is not None else None,
    )


def _audit_registration(session: Session, row: ModelVersion, made_by: authors.Authors) -> None:
    audit.record(
        session,
        actor=row.created_by,
        action="model.register",
        environment=row.environment,
        subject=f"model:{row.name}:{row.version}",
        payload={
            "digest": row.digest,
            "model_uri": row.model_uri,
            "run_id": row.run_id,
            "authors": authors.names(made_by),
        },
    )


def _record(
    session: Session,
    prepared: _Prepared,
    *,
    env: str,
    name: str,
    version: int,
    actor: str,
    retrained_from: int | None,
) -> ModelVersionView:
    """mlgate's row of the new version and its audit event, in the caller's transaction."""
    now = utcnow()
    made_by = _authors(session, prepared, env=env, actor=actor, retrained_from=retrained_from)
    profile = prepared.made.profile if prepared.made else None
    card = render(
        CardFacts(
            name=name,
            version=version,
            environment=env,
            digest=prepared.digest,
            model_uri=prepared.model.uri,
            registered_by=actor,
            registered_at=canonical_time(now),
            signature=prepared.signature,
            lineage=prepared.lineage,
            profile=profile,
            description=prepared.description,
        )
    )
    row = ModelVersion(
        environment=env,
        name=name,
        version=version,
        digest=prepared.digest,
        run_id=prepared.run.run_id if prepared.run else None,
        model_uri=prepared.model.uri,
        signature=prepared.signature,
        input_example=prepared.input_example,
        lineage=prepared.lineage,
        profile=profile,
        card=card,
        source_id=None,
        created_by=actor,
        created_at=now,
        authors=made_by,
    )
    session.add(row)
    session.flush()
    _audit_registration(session, row, made_by)
    return _view(row)


def register(
    db: Database,
    settings: Settings,
    registry: ModelRegistry,
    *,
    actor: str,
    env: str,
    request: RegisterRequest,
) -> tuple[ModelVersionView, bool]:
    """Register the logged model as the next version of `request.name`; (version, created).

    The same logged model with the same bytes, registered again under the same name, returns the
    version it already has.
    """
    prepared = _prepare(db, registry, settings.environment(env), request, SandboxScorer(settings))
    if isinstance(prepared, ModelVersionView):
        return prepared, False
    version, created_model = registry.create_version(
        name=request.name,
        model=prepared.model,
        run_id=prepared.run.run_id if prepared.run else None,
        tags={"mlgate.digest": prepared.digest, "mlgate.registered_by": actor},
        description=f"registered by mlgate; content digest sha256:{prepared.digest}",
    )
    files = version_dir(settings, env, request.name, version)
    wrote: list[Path] = []  # the files to remove if this fails: never those of a version already recorded
    try:
        with db.write() as session:
            same = _same_model(session, env, request.name, prepared.model.uri, prepared.digest)
            if same is None:
                _check_free(session, env, request.name, version)
                if prepared.made is not None:
                    wrote.append(files)
                    _write_files(files, prepared.made)
                recorded = _record(
                    session,
                    prepared,
                    env=env,
                    name=request.name,
                    version=version,
                    actor=actor,
                    retrained_from=request.retrained_from,
                )
                return recorded, True
            duplicate = _view(same)  # registered by a concurrent request while this one worked
    except BaseException:
        _undo(registry, wrote, name=request.name, version=version, drop_model=created_model)
        raise
    _undo(registry, wrote, name=request.name, version=version, drop_model=created_model)
    return duplicate, False


def list_versions(db: Database, env: str, *, name: str | None = None) -> list[ModelVersionView]:
    """The versions of `env` (of `name`), deleted ones left out."""
    query = (
        select(ModelVersion)
        .where(ModelVersion.environment == env, ModelVersion.deleted_at.is_(None))
        .order_by(ModelVersion.name, ModelVersion.version)
    )
    if name:
        query = query.where(ModelVersion.name == name)
    with db.read() as session:
        return [_view(r) for r in session.execute(query).scalars()]


def get(db: Database, env: str, name: str, version: int) -> ModelVersionView:
    """A version; NotFoundError when there is none, or it was deleted (saying by whom and when)."""
    with db.read() as session:
        return _view(live_record(session, env=env, name=name, version=version))


def live_record(session: Session, *, env: str, name: str, version: int) -> ModelVersion:
    """The version's record; NotFoundError when there is none, or it was deleted (saying by whom and when)."""
    row = model_version(session, environment=env, name=name, version=version, deleted=True)
    if row is None:
        raise NotFoundError(
            f"no version {version} of model '{name}' in '{env}'",
            details={"name": name, "version": version, "environment": env},
        )
    if row.deleted_at is not None:
        raise deleted_error(row)
    return row


def deleted_error(row: ModelVersion) -> NotFoundError:
    """The answer for a version that was deleted: who deleted it, and when."""
    assert row.deleted_at is not None
    at = canonical_time(row.deleted_at)
    return NotFoundError(
        f"version {row.version} of model '{row.name}' in '{row.environment}' was deleted by {row.deleted_by} at {at}",
        details={
            "name": row.name,
            "version": row.version,
            "environment": row.environment,
            "deleted_by": row.deleted_by,
            "deleted_at": at,
        },
    )
