"""The monitoring store read back: request rows, ground truth and the rows that have it; ground truth written.

Read by the control plane's monitors, evaluation and retraining; ground truth is written here by both doors
that accept it, the control plane's API (in bulk) and the serving host's `/endpoints/<name>/feedback`,
each after checking which request ids the store knows. pyarrow is imported inside each function: the
serving host imports this module, and must not pay for pyarrow before its first label. Tables come back
as pyarrow Tables, with the columns `mlgate.domain.request_records` describes (re-exported here for the
readers of those tables: `FEATURE_PREFIX`, `PREDICTION`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mlgate.domain.request_records import (
    FEATURE_PREFIX,
    PART_GLOB,
    PREDICTION,
    feedback_folder,
    folder_day,
    new_part,
    requests_folder,
)

__all__ = [
    "FEATURE_PREFIX",
    "PREDICTION",
    "feature_columns",
    "known_request_ids",
    "labelled",
    "read_feedback",
    "read_requests",
    "write_feedback",
]

KNOWN_IDS_DAYS = 7


def _day_folders(root: Path, endpoint: str, since: datetime | None, until: datetime | None) -> list[Path]:
    base = requests_folder(root, endpoint)
    if not base.is_dir():
        return []
    first = since.astimezone(UTC).date() if since else date.min
    last = until.astimezone(UTC).date() if until else date.max
    found = []
    for folder in sorted(base.iterdir()):
        day = folder_day(folder)
        if day is not None and first <= day <= last:
            found.append(folder)
    return found


def _read_parts(files: list[Path], columns: list[str] | None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in files:
        schema = pq.read_schema(path)
        wanted = None if columns is None else [c for c in columns if c in schema.names]
        tables.append(pq.read_table(path, columns=wanted))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def read_requests(
    root: Path,
    endpoint: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: list[str] | None = None,
) -> Any:
    """The endpoint's request rows between `since` (included) and `until` (excluded), as a pyarrow Table
    (empty, with the fixed columns, when there are none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    files = [p for folder in _day_folders(root, endpoint, since, until) for p in sorted(folder.glob(PART_GLOB))]
    needed = None if columns is None else list(dict.fromkeys([*columns, "ts"]))
    table = _read_parts(files, needed)
    if table is None:
        return pa.table(
            {
                "request_id": pa.array([], pa.string()),
                "client_request_id": pa.array([], pa.string()),
                "row": pa.array([], pa.int32()),
                "ts": pa.array([], pa.timestamp("us", "UTC")),
                "slot": pa.array([], pa.string()),
                "digest": pa.array([], pa.string()),
                "version": pa.array([], pa.int64()),
                "status": pa.array([], pa.int16()),
                "latency_ms": pa.array([], pa.float32()),
            }
        )
    mask = None
    if since is not None:
        mask = pc.greater_equal(table["ts"], pa.scalar(since.astimezone(UTC), pa.timestamp("us", "UTC")))
    if until is not None:
        before = pc.less(table["ts"], pa.scalar(until.astimezone(UTC), pa.timestamp("us", "UTC")))
        mask = before if mask is None else pc.and_(mask, before)
    if mask is not None:
        table = table.filter(mask)
    if columns is not None and "ts" not in columns:
        table = table.drop_columns(["ts"])
    return table


def feature_columns(table: Any) -> list[str]:
    """The feature names of a request table (without the `in:` prefix)."""
    return [name[len(FEATURE_PREFIX) :] for name in table.column_names if name.startswith(FEATURE_PREFIX)]


def write_feedback(root: Path, endpoint: str, request_ids: list[str], labels: list[float], *, source: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(request_ids) != len(labels):
        raise ValueError(f"{len(request_ids)} request ids but {len(labels)} labels")
    if not request_ids:
        return
    now = int(time.time() * 1e6)
    table = pa.table(
        {
            "request_id": pa.array(request_ids, pa.string()),
            "label": pa.array(labels, pa.float64()),
            "ts": pa.array([now] * len(request_ids), pa.timestamp("us", "UTC")),
            "source": pa.array([source] * len(request_ids), pa.string()),
        }
    )
    folder = feedback_folder(root, endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    path, tmp = new_part(folder)
    pq.write_table(table, tmp, compression="zstd", use_dictionary=False)
    os.replace(tmp, path)


def read_feedback(root: Path, endpoint: str) -> Any:
    import pyarrow as pa

    folder = feedback_folder(root, endpoint)
    table = _read_parts(sorted(folder.glob(PART_GLOB)) if folder.is_dir() else [], None)
    if table is None:
        return pa.table(
            {
                "request_id": pa.array([], pa.string()),
                "label": pa.array([], pa.float64()),
                "ts": pa.array([], pa.timestamp("us", "UTC")),
                "source": pa.array([], pa.string()),
            }
        )
    return table


def known_request_ids(root: Path, endpoint: str, ids: Iterable[str], *, days: int = KNOWN_IDS_DAYS) -> set[str]:
    """Which of `ids` the store holds requests for (looking back `days`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return set()
    since = datetime.now(UTC) - timedelta(days=days)
    table = read_requests(root, endpoint, since=since, columns=["request_id"])
    present = pc.is_in(pa.array(wanted, pa.string()), value_set=table["request_id"].combine_chunks())
    return {i for i, hit in zip(wanted, present.to_pylist(), strict=True) if hit}


def labelled(root: Path, endpoint: str, *, since: datetime | None = None, until: datetime | None = None) -> Any:
    """The request rows that have ground truth, with the latest label of their request as `label`."""
    feedback = read_feedback(root, endpoint).sort_by([("ts", "ascending")])
    latest = feedback.group_by("request_id", use_threads=False).aggregate([("label", "last")])
    latest = latest.select(["request_id", "label_last"]).rename_columns(["request_id", "label"])
    requests = read_requests(root, endpoint, since=since, until=until)
    return requests.join(latest, keys="request_id", join_type="inner")
