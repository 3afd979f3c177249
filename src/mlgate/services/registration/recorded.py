"""What mlgate recorded of an environment's registry, as the MLflow door asks before a write.

A recorded version's files, its MLflow version and its run are what its digest, card and gate
decisions vouch for: the door refuses writes that would change them behind mlgate's back.
"""

from __future__ import annotations

from sqlalchemy import func, select

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion


def version(db: Database, env: str, name: str, number: int) -> ModelVersion | None:
    """The live (not deleted) record of version `number` of `name`."""
    with db.read() as session:
        return session.execute(
            select(ModelVersion).where(
                ModelVersion.environment == env,
                ModelVersion.name == name,
                ModelVersion.version == number,
                ModelVersion.deleted_at.is_(None),
            )
        ).scalar_one_or_none()


def live_versions(db: Database, env: str, name: str) -> int:
    """How many versions of `name` mlgate records and has not deleted."""
    with db.read() as session:
        return session.execute(
            select(func.count()).where(
                ModelVersion.environment == env, ModelVersion.name == name, ModelVersion.deleted_at.is_(None)
            )
        ).scalar_one()


def logged_model(db: Database, env: str, model_id: str) -> bool:
    """Whether a version, live or deleted, was registered from logged model `model_id` (its files are
    what the version's digest covers, and copies in other environments came from them)."""
    with db.read() as session:
        found = session.execute(
            select(ModelVersion.id)
            .where(ModelVersion.environment == env, ModelVersion.model_uri == f"models:/{model_id}")
            .limit(1)
        ).first()
    return found is not None


def run(db: Database, env: str, run_id: str) -> bool:
    """Whether a recorded version came from run `run_id` (its lineage names the run)."""
    with db.read() as session:
        found = session.execute(
            select(ModelVersion.id).where(ModelVersion.environment == env, ModelVersion.run_id == run_id).limit(1)
        ).first()
    return found is not None
