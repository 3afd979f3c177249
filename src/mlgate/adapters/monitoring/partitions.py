"""The monitoring store's partitions on disk: an endpoint's hours, the live parts of each, read as one dataset.

The layout is `mlgate.domain.request_records`'. Only real folders and regular files count: the serving
host can write its environment's store, and a link it planted there (to another environment's store, or
to a file of the control plane) must never be read, compacted or deleted through. Hidden names (a part
being written, an hour being deleted) are skipped.

Parts are read with `pyarrow.dataset`: the window's hours are chosen from the folder names, and the row
filter (the window's times, the ids looked up) is pushed down to each part's row-group statistics, which
skip most of a compacted part (sorted by time) outright. Parts of one hour can differ in columns (a
new model version with another signature): the dataset's schema is theirs unified, a column a part lacks
read as null, and a column of two incompatible types read as text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mlgate.domain.request_records import COMPACT_PREFIX, REPLACES, Hour, is_part, parse_day, parse_hour


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as found:
            return sorted((e for e in found if not e.name.startswith(".")), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def subfolders(folder: Path) -> list[Path]:
    """The real folders in `folder` (never a link to one)."""
    return [Path(e.path) for e in _entries(folder) if e.is_dir(follow_symlinks=False)]


def part_files(folder: Path) -> list[Path]:
    """Every part file in `folder`, compacted or not, replaced or not (regular files only)."""
    return [Path(e.path) for e in _entries(folder) if e.is_file(follow_symlinks=False) and is_part(e.name)]


def hours(base: Path, since: datetime | None = None, until: datetime | None = None) -> Iterator[tuple[Hour, Path]]:
    """The hours under an endpoint's `base` (requests or feedback) that overlap [since, until), oldest first,
    with their folders; a day folder holding parts of its own (the older layout) is an hour of a day."""
    for day_folder in subfolders(base):
        day = parse_day(day_folder.name)
        if day is None or not Hour(day, None).overlaps(since, until):
            continue
        if part_files(day_folder):
            yield Hour(day, None), day_folder
        for hour_folder in subfolders(day_folder):
            hour = parse_hour(hour_folder.name)
            if hour is not None and Hour(day, hour).overlaps(since, until):
                yield Hour(day, hour), hour_folder


def replaced_by(path: Path) -> set[str]:
    """The file names a compacted part replaces (none when its metadata says nothing readable)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path).metadata or {}
        names = json.loads(metadata.get(REPLACES, b"[]"))
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def live_parts(folder: Path) -> list[Path]:
    """The parts of one folder a reader reads: all but those a compacted part of the folder replaces."""
    files = part_files(folder)
    if len(files) < 2:  # a part alone replaces nothing: its footer is not read
        return files
    replaced: set[str] = set()
    for path in files:
        if path.name.startswith(COMPACT_PREFIX):
            replaced |= replaced_by(path)
    return [p for p in files if p.name not in replaced]


def _unified(schemas: list[Any]) -> Any:
    """One schema for parts that may differ: types promoted where they can be, text where they cannot."""
    import pyarrow as pa

    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        fields: dict[str, Any] = {}
        for schema in schemas:
            for field in schema:
                known = fields.get(field.name)
                if known is None:
                    fields[field.name] = field
                elif known.type != field.type:
                    try:
                        fields[field.name] = pa.unify_schemas(
                            [pa.schema([known]), pa.schema([field])], promote_options="permissive"
                        ).field(0)
                    except (pa.ArrowTypeError, pa.ArrowInvalid):
                        fields[field.name] = pa.field(field.name, pa.string())
        return pa.schema(list(fields.values()))


def concat(tables: list[Any]) -> Any:
    """Tables read from different parts as one, under their unified schema (as `read_parts` reads them)."""
    import pyarrow as pa

    schema = _unified([t.schema for t in tables])
    aligned = []
    for table in tables:
        columns = [
            table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema
        ]
        aligned.append(pa.table(columns, schema=schema.remove_metadata()))
    return pa.concat_tables(aligned)


def read_parts(
    paths: list[Path],
    columns: list[str] | None,
    row_filter: Any = None,
    *,
    exclude: tuple[str, ...] = (),
    dictionary: tuple[str, ...] = (),
) -> Any:
    """The rows of `paths` that pass `row_filter` (a `pyarrow.dataset` expression), with `columns` (those
    the parts have; all but `exclude` when None), as one Table; None when there are no parts. Text columns
    named in `dictionary` come back dictionary-encoded, as the parts store them (a slot's name is not
    copied for every row)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not paths:
        return None
    fragments = list(ds.dataset([str(p) for p in paths], format="parquet").get_fragments())
    schema = _unified([f.physical_schema for f in fragments])
    encoded = {f.name for f in schema if f.name in dictionary and pa.types.is_string(f.type)}
    if encoded:
        schema = pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in encoded else f for f in schema])
    parquet = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=encoded))
    dataset = ds.dataset([f.path for f in fragments], schema=schema, format=parquet)
    wanted = [c for c in (schema.names if columns is None else columns) if c in schema.names and c not in exclude]
    return dataset.to_table(columns=wanted, filter=row_filter)
