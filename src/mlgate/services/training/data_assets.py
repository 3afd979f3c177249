"""Data assets: versioned, content-addressed CSV or Parquet files registered in an environment.

Files are stored once per digest under the environment's data store (`objects/<sha256>`), so a version
keeps its bytes whatever later happens to the path it came from; each version records its digest,
row count and column schema. An upload is unpacked into a fresh folder of the data store (`incoming/`)
within `DATA_CAPS`, each file's format checked from its name before its bytes are written, and the
folder is removed whatever happens: its files are moved into `objects/`, or nothing is kept.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import func, select

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import DataAsset, utcnow
from mlgate.archives import ArchiveCaps, Unpacked, extract
from mlgate.config import Environment
from mlgate.domain.digest import listing_digest
from mlgate.domain.jobs import DataRef
from mlgate.errors import NotFoundError, ValidationError
from mlgate.services import audit

ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DATA_CAPS = ArchiveCaps(
    # A Parquet folder is a few to a few thousand part files; walking a member's header costs the server
    # some 70 microseconds of CPU, so 5,000 of them stay under half a second.
    members=5_000,
    # Room for very large tables, not for a decompression bomb.
    unpacked_bytes=64 * 1024 * 1024 * 1024,
    # Parquet is compressed already; CSV tables compress 3 to 40 times (one-hot columns near 35); gzip
    # itself stops near 1,030 times, which a stream of zeros reaches.
    ratio=200,
)


@dataclass(frozen=True)
class DataAssetView:
    environment: str
    name: str
    version: int
    sha256: str
    format: str
    rows: int
    columns: list[dict[str, str]]
    files: list[dict[str, Any]]
    size: int
    source: str | None
    created_by: str
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def _view(row: DataAsset) -> DataAssetView:
    return DataAssetView(
        environment=row.environment,
        name=row.name,
        version=row.version,
        sha256=row.sha256,
        format=row.format,
        rows=row.rows,
        columns=list(row.columns),
        files=list(row.files),
        size=row.size,
        source=row.source,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _objects(env: Environment) -> Path:
    return env.data_dir / "objects"


def _inspect(files: list[Path], fmt: str) -> tuple[int, list[dict[str, str]]]:
    """Row count and column schema; every file of a folder asset must share the first one's columns."""
    import pandas as pd

    rows, columns = 0, None
    for path in files:
        try:
            frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
        except Exception as exc:
            raise ValidationError(f"cannot read {path.name} as {fmt}: {exc}", details={"file": path.name}) from exc
        schema = [{"name": str(c), "type": str(t)} for c, t in frame.dtypes.items()]
        if columns is None:
            columns = schema
        elif [c["name"] for c in schema] != [c["name"] for c in columns]:
            raise ValidationError(
                f"{path.name} has other columns than the asset's first file",
                details={"file": path.name},
            )
        rows += len(frame)
    if columns is None or not columns:
        raise ValidationError("the data asset has no columns")
    return rows, columns


class _OneFormat:
    """Admits an upload's files by name as they are unpacked: CSV or Parquet, and all of one format."""

    def __init__(self) -> None:
        self.format: str | None = None

    def admit(self, name: str) -> None:
        found = FORMATS.get(PurePosixPath(name).suffix.lower())
        if found is None:
            raise ValidationError(f"'{name}' is neither CSV nor Parquet (.csv, .parquet)", details={"file": name})
        if self.format not in (None, found):
            raise ValidationError("a data asset is all CSV or all Parquet, not both")
        self.format = found


@dataclass(frozen=True)
class _Upload:
    """An upload's files, kept in the data store, and what they hold."""

    digest: str  # over the listing of (relative path, file digest)
    format: str
    rows: int
    columns: list[dict[str, str]]
    files: list[dict[str, Any]]  # {path, sha256, size}


def _store_upload(env: Environment, archive: bytes | IO[bytes]) -> _Upload:
    """Unpack the upload (a gzipped tar) into a fresh folder of the data store, read its tables, and keep
    each file once by digest; the folder is removed whether the upload is kept or refused."""
    incoming = env.data_dir / "incoming"
    root = incoming / secrets.token_hex(8)
    formats = _OneFormat()
    try:
        unpacked = extract(archive, root, what="data upload", caps=DATA_CAPS, admit=formats.admit)
        if not unpacked or formats.format is None:
            raise ValidationError("the upload holds no files")
        # The order a listing of the folder gives (by path segments), which the digest has always used.
        unpacked.sort(key=lambda f: PurePosixPath(f.name).parts)
        rows, columns = _inspect([root / f.name for f in unpacked], formats.format)
        _keep_objects(env, root, unpacked)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    entries = [{"path": f.name, "sha256": f.sha256, "size": f.size} for f in unpacked]
    listing = [(f.name, f.sha256) for f in unpacked]
    return _Upload(digest=listing_digest(listing), format=formats.format, rows=rows, columns=columns, files=entries)


def _keep_objects(env: Environment, root: Path, files: list[Unpacked]) -> None:
    """Each unpacked file moved into the data store's objects/ under its digest, unless one is there. The
    upload was unpacked in the data store, so this is a rename: no copy, and never a partial object."""
    objects = _objects(env)
    objects.mkdir(parents=True, exist_ok=True)
    for unpacked in files:
        target = objects / unpacked.sha256
        if not target.exists():
            os.replace(root / unpacked.name, target)


def register(
    db: Database,
    env: Environment,
    *,
    actor: str,
    name: str,
    archive: bytes | IO[bytes],
    source: str | None = None,
) -> tuple[DataAssetView, bool]:
    """Store the uploaded files (a gzipped tar: its bytes, or a file open at its start) as the next
    version; (view, created).

    Registering the same bytes as the latest version returns that version instead of a copy.
    """
    if not ASSET_NAME.match(name):
        raise ValidationError(
            f"invalid data asset name '{name}': expected lowercase letters, digits, '.', '_' or '-'",
            details={"name": name},
        )
    upload = _store_upload(env, archive)
    with db.write() as session:
        latest = session.execute(
            select(DataAsset)
            .where(DataAsset.environment == env.name, DataAsset.name == name)
            .order_by(DataAsset.version.desc())
            .limit(1)
        ).scalar_one_or_none()
        if latest is not None and latest.sha256 == upload.digest:
            return _view(latest), False
        row = DataAsset(
            environment=env.name,
            name=name,
            version=(latest.version + 1) if latest else 1,
            sha256=upload.digest,
            format=upload.format,
            rows=upload.rows,
            columns=upload.columns,
            files=upload.files,
            size=sum(entry["size"] for entry in upload.files),
            source=source,
            created_by=actor,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="data.register",
            environment=env.name,
            subject=f"data:{name}@{row.version}",
            payload={"sha256": upload.digest, "rows": upload.rows, "files": len(upload.files)},
        )
        return _view(row), True


def list_assets(db: Database, env: str, *, name: str | None = None) -> list[DataAssetView]:
    query = select(DataAsset).where(DataAsset.environment == env).order_by(DataAsset.name, DataAsset.version)
    if name:
        query = query.where(DataAsset.name == name)
    with db.read() as session:
        return [_view(r) for r in session.execute(query).scalars()]


def resolve(db: Database, env: str, ref: DataRef) -> DataAssetView:
    """The version a reference names; `name` alone is the latest."""
    with db.read() as session:
        query = select(DataAsset).where(DataAsset.environment == env, DataAsset.name == ref.name)
        if ref.version is None:
            newest = select(func.max(DataAsset.version)).where(DataAsset.environment == env, DataAsset.name == ref.name)
            query = query.where(DataAsset.version == newest.scalar_subquery())
        else:
            query = query.where(DataAsset.version == ref.version)
        row = session.execute(query).scalar_one_or_none()
        if row is None:
            raise NotFoundError(
                f"no data asset '{ref}' in '{env}'; register it with `mlgate data register {ref.name} PATH`",
                details={"data": str(ref), "environment": env},
            )
        return _view(row)


def materialize(env: Environment, asset: DataAssetView, destination: Path) -> Path:
    """Lay the asset's files out under destination; returns the file itself for a one-file asset."""
    destination.mkdir(parents=True, exist_ok=True)
    for entry in asset.files:
        target = destination / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        # A copy, not a link: a job that writes to its input must not change the stored version.
        shutil.copyfile(_objects(env) / entry["sha256"], target)
    if len(asset.files) == 1:
        return destination / str(asset.files[0]["path"])
    return destination
