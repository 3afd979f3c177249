"""Reads of the control database that several services make, each written once: a model version by
its (environment, name, version), a version's promotion chain, and stored times made UTC-aware.

A deleted version (a dev version deleted through mlgate) keeps its row: `model_version` skips it unless
asked, and the chain walks (by `source_id`) still see it, since a promoted version is never deleted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.models import ModelVersion

# A chain is as long as the environments and a version has a copy in each later one; the bounds only
# keep a corrupt `source_id` (a cycle) from walking forever.
MAX_SOURCES = 64
MAX_COPIES = 256


@overload
def as_utc(at: datetime) -> datetime: ...
@overload
def as_utc(at: None) -> None: ...
def as_utc(at: datetime | None) -> datetime | None:
    """Every stored time is UTC, but SQLite hands them back naive (PostgreSQL aware): say so."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def model_version(
    session: Session, *, environment: str, name: str, version: int, deleted: bool = False
) -> ModelVersion | None:
    """mlgate's record of NAME:VERSION in `environment`, if it has one that is not deleted; with
    `deleted`, a deleted one too (the number is taken all the same)."""
    query = select(ModelVersion).where(
        ModelVersion.environment == environment, ModelVersion.name == name, ModelVersion.version == version
    )
    if not deleted:
        query = query.where(ModelVersion.deleted_at.is_(None))
    return session.execute(query).scalar_one_or_none()


def sources(session: Session, *, record: ModelVersion) -> list[ModelVersion]:
    """The versions `record` was promoted from (following `source_id`), nearest first."""
    found: list[ModelVersion] = []
    seen = {record.id}
    while record.source_id is not None and record.source_id not in seen and len(found) < MAX_SOURCES:
        source = session.get(ModelVersion, record.source_id)
        if source is None:
            break
        found.append(source)
        seen.add(source.id)
        record = source
    return found


def chain_root(session: Session, *, record: ModelVersion) -> ModelVersion:
    """The first version of `record`'s promotion chain: the one registered in development."""
    found = sources(session, record=record)
    return found[-1] if found else record


def copies(session: Session, *, record: ModelVersion) -> list[ModelVersion]:
    """The versions promoted from `record`, then those promoted from them, and so on: nearest first."""
    found: list[ModelVersion] = []
    frontier = [record.id]
    while frontier and len(found) < MAX_COPIES:
        children = list(session.execute(select(ModelVersion).where(ModelVersion.source_id.in_(frontier))).scalars())
        found.extend(children)
        frontier = [c.id for c in children]
    return found


def promotion_chain(session: Session, *, record: ModelVersion) -> list[ModelVersion]:
    """`record`'s whole promotion chain in promotion order: the version registered first, the copies of
    it that led to `record`, `record` itself, and the copies made of it since."""
    return [*reversed(sources(session, record=record)), record, *copies(session, record=record)]
