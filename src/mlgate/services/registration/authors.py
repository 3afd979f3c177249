"""Who made a model: the people who may not decide its gates.

A version's authors are whoever created its run and its logged model (recorded by the MLflow door
from the caller's token when it created them, never from the tags a client sets), the requester of
the job that trained it, whoever registered it, and for a retrained candidate the authors of the
version it was retrained from. They are worked out once, at registration, and kept on the version's
record; promoted copies are the same model and have the same authors. `system` is nobody's author:
automation decides nothing at a gate anyway.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Job, MlflowCreation, ModelVersion, utcnow
from mlgate.adapters.sql.queries import chain_root
from mlgate.domain.permissions import SYSTEM, Principal

RUN, LOGGED_MODEL = "run", "logged-model"
# What each author did, in the order the evidence lists them.
RUN_CREATOR = "created the run"
MODEL_CREATOR = "logged the model"
JOB_REQUESTER = "requested the training job"
REGISTRAR = "registered the version"
SOURCE_AUTHOR = "an author of {source}, which it was retrained from"

Authors = list[dict[str, Any]]  # [{"name": ..., "as": [what they did, ...]}], in the order found


def record_creation(db: Database, *, env: str, kind: str, object_id: str, principal: Principal) -> None:
    """The door created a run or a logged model for `principal`: remember who (once; a retry is a no-op)."""
    try:
        with db.write() as session:
            if _creation(session, env=env, kind=kind, object_id=object_id) is None:
                session.add(
                    MlflowCreation(
                        environment=env,
                        kind=kind,
                        object_id=object_id,
                        created_by=principal.name,
                        job_id=principal.job_id,
                        created_at=utcnow(),
                    )
                )
    except IntegrityError:  # a concurrent record of the same object: it is recorded
        pass


def _creation(session: Session, *, env: str, kind: str, object_id: str | None) -> MlflowCreation | None:
    if not object_id:
        return None
    return session.execute(
        select(MlflowCreation).where(
            MlflowCreation.environment == env, MlflowCreation.kind == kind, MlflowCreation.object_id == object_id
        )
    ).scalar_one_or_none()


def _add(found: Authors, name: str | None, role: str) -> None:
    if not name or name == SYSTEM:
        return
    for author in found:
        if author["name"] == name:
            if role not in author["as"]:
                author["as"].append(role)
            return
    found.append({"name": name, "as": [role]})


def of_new_version(
    session: Session,
    *,
    env: str,
    run_id: str | None,
    model_id: str,
    job_id: int | None,
    registrar: str,
    retrained_from: ModelVersion | None,
) -> Authors:
    """The authors of a version about to be recorded in `env` (the development environment)."""
    found: Authors = []
    run = _creation(session, env=env, kind=RUN, object_id=run_id)
    _add(found, run.created_by if run else None, RUN_CREATOR)
    model = _creation(session, env=env, kind=LOGGED_MODEL, object_id=model_id)
    _add(found, model.created_by if model else None, MODEL_CREATOR)
    job = session.get(Job, job_id) if job_id is not None else None
    _add(found, job.requested_by if job else None, JOB_REQUESTER)
    _add(found, registrar, REGISTRAR)
    if retrained_from is not None:
        source = f"{retrained_from.name}:{retrained_from.version}"
        for author in of_version(session, retrained_from):
            for role in author["as"]:
                _add(
                    found,
                    author["name"],
                    role if role.startswith("an author of") else SOURCE_AUTHOR.format(source=source),
                )
    return found


def of_version(session: Session, record: ModelVersion) -> Authors:
    """A recorded version's authors: those of the first version of its promotion chain. A version recorded
    before authors were kept has the person whose job trained it, else whoever registered it."""
    root = chain_root(session, record=record)
    if root.authors is not None:
        return [{"name": a["name"], "as": list(a["as"])} for a in root.authors]
    found: Authors = []
    job_id = (root.lineage or {}).get("job_id")
    job = session.get(Job, int(job_id)) if isinstance(job_id, int | str) and str(job_id).isdigit() else None
    _add(found, job.requested_by if job else None, JOB_REQUESTER)
    _add(found, root.created_by, REGISTRAR)
    return found


def names(authors: Authors) -> list[str]:
    return [str(a["name"]) for a in authors]
