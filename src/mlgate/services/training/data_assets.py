"""Data assets: versioned, content-addressed CSV or Parquet files registered in an environment.

Files are stored once per digest under the environment's data store (`objects/<sha256>`), so a version
keeps its bytes whatever later happens to the path it came from; each version records its digest,
row count and column schema.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import DataAsset, utcnow
from mlgate.config import Environment
from mlgate.domain.digest import file_sha256, listing_digest
from mlgate.domain.jobs import DataRef
from mlgate.errors import NotFoundError, ValidationError
from mlgate.services import audit
from mlgate.snapshot import extract

ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# What an upload may unpack to: room for very large tables, not for a decompression bomb.
MAX_EXTRACTED_BYTES = 64 * 1024 * 1024 * 1024


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


def _data_files(root: Path) -> tuple[list[Path], str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise ValidationError("the upload holds no files")
    formats = {FORMATS.get(p.suffix.lower()) for p in files}
    if None in formats:
        odd = next(p for p in files if p.suffix.lower() not in FORMATS)
        raise ValidationError(
            f"'{odd.relative_to(root)}' is neither CSV nor Parquet (.csv, .parquet)",
            details={"file": str(odd.relative_to(root))},
        )
    if len(formats) > 1:
        raise ValidationError("a data asset is all CSV or all Parquet, not both")
    return files, str(formats.pop())


@dataclass(frozen=True)
class _Upload:
    """An upload's files, kept in the data store, and what they hold."""

    digest: str  # over the listing of (relative path, file digest)
    format: str
    rows: int
    columns: list[dict[str, str]]
    files: list[dict[str, Any]]  # {path, sha256, size}


def _store_upload(env: Environment, archive: bytes) -> _Upload:
    """Unpack the upload (a gzipped tar), read its tables, and keep each file once by digest."""
    with tempfile.TemporaryDirectory(prefix="mlgate-data-") as tmp:
        root = Path(tmp)
        extract(archive, root, what="data upload", max_bytes=MAX_EXTRACTED_BYTES)
        files, fmt = _data_files(root)
        listing = [(p.relative_to(root).as_posix(), file_sha256(p)) for p in files]
        rows, columns = _inspect(files, fmt)
        _keep_objects(env, [(path, sha) for path, (_, sha) in zip(files, listing, strict=True)])
        entries = [{"path": rel, "sha256": sha, "size": (root / rel).stat().st_size} for rel, sha in listing]
    return _Upload(digest=listing_digest(listing), format=fmt, rows=rows, columns=columns, files=entries)


def _keep_objects(env: Environment, files: list[tuple[Path, str]]) -> None:
    """Each (file, digest) copied into the data store's objects/ unless a file of that digest is there."""
    objects = _objects(env)
    objects.mkdir(parents=True, exist_ok=True)
    for path, sha in files:
        target = objects / sha
        if not target.exists():  # a private partial name: two uploads of the same file may race here
            handle, partial = tempfile.mkstemp(dir=objects, prefix=f".{sha}.", suffix=".partial")
            os.close(handle)
            shutil.copyfile(path, partial)
            os.replace(partial, target)


def register(
    db: Database,
    env: Environment,
    *,
    actor: str,
    name: str,
    archive: bytes,
    source: str | None = None,
) -> tuple[DataAssetView, bool]:
    """Store the uploaded files (a gzipped tar) as the next version; (view, created).

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
