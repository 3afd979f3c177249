"""Deleting a recorded model version: only in the development environment, only through mlgate.

A version leaves dev's registry here, never behind mlgate's back (the MLflow door refuses that). It is
refused while the version has an active promotion request, or once it was promoted: a copy in another
environment points back at it, and staging and production versions are never deleted. The order keeps
nothing half-done: check, delete the MLflow version, then mark mlgate's record deleted with its audit
event in one transaction. If MLflow refuses, nothing is recorded; if the record cannot be written after
MLflow deleted the version, asking again finishes it (the version already gone counts as deleted).
mlgate's record stays, so the number is never given again (MLflow never reuses one either).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.mlflow.base import ModelRegistry
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, PromotionRequest, utcnow
from mlgate.adapters.sql.queries import copies
from mlgate.config import Settings
from mlgate.domain.environments import EnvironmentKind
from mlgate.domain.gates import RequestState
from mlgate.errors import BackendError, ConflictError, MlgateError, NotFoundError, PermissionDeniedError
from mlgate.services import audit
from mlgate.services.promotion.requests import ACTIVE
from mlgate.services.registration.models import live_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletedVersion:
    environment: str
    name: str
    version: int
    digest: str
    created_by: str
    deleted_by: str
    deleted_at: datetime


def _check_deletable(session: Session, row: ModelVersion) -> None:
    """Refused while a request carries the version through a gate, and once it went through one."""
    label = f"{row.name}:{row.version}"
    request = session.execute(
        select(PromotionRequest)
        .where(
            PromotionRequest.model_version_id == row.id,
            PromotionRequest.state.in_([*ACTIVE, RequestState.PROMOTED.value]),
        )
        .order_by(PromotionRequest.id)
        .limit(1)
    ).scalar_one_or_none()
    details = {"name": row.name, "version": row.version, "environment": row.environment}
    if request is not None and request.state != RequestState.PROMOTED.value:
        raise ConflictError(
            f"{label} has promotion request {request.id} into '{request.target_env}' ({request.state}): "
            "a version is deleted only while no request carries it through a gate",
            details={**details, "request": request.id, "state": request.state},
        )
    promoted = copies(session, record=row)
    if request is None and not promoted:
        return
    where = ", ".join(f"{c.environment}:{c.version}" for c in promoted) or "none recorded"
    through = f" by request {request.id}" if request is not None else ""
    raise ConflictError(
        f"{label} was promoted{through} (copies: {where}): a promoted version stays, as its copies do",
        details={**details, "request": request.id if request is not None else None, "copies": where},
    )


def _delete_in_mlflow(registry: ModelRegistry, *, env: str, name: str, version: int) -> bool:
    """Delete the MLflow version; False if MLflow no longer had it (an earlier attempt deleted it)."""
    try:
        registry.delete_version(name=name, version=version, drop_model=False)
    except NotFoundError:
        log.info("version %s of '%s' was already gone from %s's registry", version, name, env)
        return False
    except MlgateError as exc:
        raise BackendError(
            f"could not delete version {version} of '{name}' from the '{env}' MLflow registry, so mlgate "
            f"recorded nothing: {exc.message}",
            details={"name": name, "version": version, "environment": env},
        ) from exc
    return True


def delete_version(
    db: Database, settings: Settings, registry: ModelRegistry, *, actor: str, env: str, name: str, version: int
) -> DeletedVersion:
    """Delete NAME:VERSION of the development environment `env`: its MLflow version goes, mlgate's record
    is marked deleted (by `actor`, now) and audited as `model.delete`."""
    environment = settings.environment(env)
    if environment.kind is not EnvironmentKind.DEVELOPMENT:
        raise PermissionDeniedError(
            f"versions are deleted only in the development environment; a version in '{env}' came by "
            "promotion, whose records keep it",
            details={"environment": env},
        )
    with db.read() as session:
        _check_deletable(session, live_record(session, env=env, name=name, version=version))
    in_mlflow = _delete_in_mlflow(registry, env=env, name=name, version=version)
    with db.write() as session:
        row = live_record(session, env=env, name=name, version=version)  # a concurrent delete wins
        row.deleted_at, row.deleted_by = utcnow(), actor
        audit.record(
            session,
            actor=actor,
            action="model.delete",
            environment=env,
            subject=f"model:{name}:{version}",
            payload={"digest": row.digest, "model_uri": row.model_uri, "in_mlflow": in_mlflow},
        )
        return DeletedVersion(
            environment=env,
            name=name,
            version=version,
            digest=row.digest,
            created_by=row.created_by,
            deleted_by=actor,
            deleted_at=row.deleted_at,
        )
