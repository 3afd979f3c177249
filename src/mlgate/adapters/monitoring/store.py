"""The monitoring store read back: request rows, ground truth and the rows that have it; ground truth written.

Read by the control plane's monitors, evaluation and retraining; ground truth is written here by both doors
that accept it, the control plane's API (in bulk) and the serving host's `/endpoints/<name>/feedback`,
each after checking which request ids the store knows. The layout is `mlgate.domain.request_records`'; a
window reads only its hours (`mlgate.adapters.monitoring.partitions`), and a request id names its hour, so
looking ids up and joining labels read the hours the ids name, not days of the store. pyarrow is imported
inside each function: the serving host imports this module, and must not pay for pyarrow before its first
label. Tables come back as pyarrow Tables, with the columns `mlgate.domain.request_records` describes
(re-exported here for the readers of those tables: `FEATURE_PREFIX`, `PREDICTION`).
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlgate.adapters.monitoring.partitions import hours, live_parts, part_files, read_parts
from mlgate.domain.request_records import (
    FEATURE_PREFIX,
    HOUR,
    PREDICTION,
    Hour,
    feedback_folder,
    id_time,
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

KNOWN_IDS_DAYS = 7  # how far back an id that names no time (an older host's) is looked for
TIMED_IDS_SINCE = datetime(2026, 12, 1, tzinfo=UTC)  # no host issued an id naming a time before this
READ_ATTEMPTS = 3  # a part compacted away between listing and reading: list again
REQUEST_COLUMNS = {
    "request_id": "string",
    "client_request_id": "string",
    "row": "int32",
    "ts": "timestamp",
    "slot": "string",
    "digest": "string",
    "version": "int64",
    "status": "int16",
    "latency_ms": "float32",
}


FEEDBACK_COLUMNS = {"request_id": "string", "label": "double", "ts": "timestamp", "source": "string"}


def _empty(columns: dict[str, str]) -> Any:
    """A table of no rows with `columns` (name: type alias; "timestamp" is UTC microseconds)."""
    import pyarrow as pa

    types = {"timestamp": pa.timestamp("us", "UTC")}
    return pa.table({name: pa.array([], types.get(t) or pa.type_for_alias(t)) for name, t in columns.items()})


def _window_filter(since: datetime | None, until: datetime | None) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds

    moment = pa.timestamp("us", "UTC")
    bounds = []
    if since is not None:
        bounds.append(ds.field("ts") >= pa.scalar(since.astimezone(UTC), moment))
    if until is not None:
        bounds.append(ds.field("ts") < pa.scalar(until.astimezone(UTC), moment))
    if not bounds:
        return None
    return bounds[0] if len(bounds) == 1 else bounds[0] & bounds[1]


def _read_hours(
    folders: Iterable[Path], columns: list[str] | None, row_filter: Any, exclude: tuple[str, ...] = ()
) -> Any:
    """The live parts of `folders` read as one table (listed again if compaction removed one meanwhile)."""
    folders = list(folders)
    for attempt in range(READ_ATTEMPTS):
        try:
            parts = [p for folder in folders for p in live_parts(folder)]
            return read_parts(parts, columns, row_filter, exclude=exclude)
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    return None


def read_requests(
    root: Path,
    endpoint: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: list[str] | None = None,
    exclude: tuple[str, ...] = (),
    skip: Iterable[Hour] = (),
) -> Any:
    """The endpoint's request rows between `since` (included) and `until` (excluded), but those of the
    hours in `skip`, as a pyarrow Table (empty, with the fixed columns, when there are none): `columns`,
    or all but `exclude`."""
    skipped = set(skip)
    folders = [f for hour, f in hours(requests_folder(root, endpoint), since, until) if hour not in skipped]
    needed = None if columns is None else list(dict.fromkeys(columns))
    table = _read_hours(folders, needed, _window_filter(since, until), exclude)
    if table is None:
        empty = _empty(REQUEST_COLUMNS)
        wanted = [c for c in (columns or REQUEST_COLUMNS) if c in REQUEST_COLUMNS and c not in exclude]
        return empty.select(wanted)
    return table


def feature_columns(table: Any) -> list[str]:
    """The feature names of a request table (without the `in:` prefix)."""
    return [name[len(FEATURE_PREFIX) :] for name in table.column_names if name.startswith(FEATURE_PREFIX)]


def _timed_hour(request_id: str, now: datetime) -> Hour | None:
    """The hour `request_id` names; None for an id that names none (an older host's, or a caller's)."""
    issued = id_time(request_id)
    if issued is None or not TIMED_IDS_SINCE <= issued <= now + HOUR:
        return None
    return Hour.of(issued)


def write_feedback(root: Path, endpoint: str, request_ids: list[str], labels: list[float], *, source: str) -> None:
    """Labels, each into the hour of the request it labels (an id that names no hour: the older, flat
    folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(request_ids) != len(labels):
        raise ValueError(f"{len(request_ids)} request ids but {len(labels)} labels")
    base, now = feedback_folder(root, endpoint), datetime.now(UTC)
    groups: dict[Hour | None, list[int]] = collections.defaultdict(list)
    for position, request_id in enumerate(request_ids):
        groups[_timed_hour(request_id, now)].append(position)
    stamp = int(time.time() * 1e6)
    for hour, positions in groups.items():
        table = pa.table(
            {
                "request_id": pa.array([request_ids[i] for i in positions], pa.string()),
                "label": pa.array([labels[i] for i in positions], pa.float64()),
                "ts": pa.array([stamp] * len(positions), pa.timestamp("us", "UTC")),
                "source": pa.array([source] * len(positions), pa.string()),
            }
        )
        folder = base if hour is None else hour.folder(base)
        folder.mkdir(parents=True, exist_ok=True)
        path, tmp = new_part(folder)
        pq.write_table(table, tmp, compression="zstd", use_dictionary=False)
        os.replace(tmp, path)


def read_feedback(root: Path, endpoint: str, *, since: datetime | None = None, until: datetime | None = None) -> Any:
    """The labels of the requests issued in [since, until) (all without bounds), with those of ids that
    name no hour."""

    base = feedback_folder(root, endpoint)
    flat = part_files(base)  # the older layout, and ids that name no hour
    table = read_parts([*flat, *(p for _, folder in hours(base, since, until) for p in live_parts(folder))], None)
    return _empty(FEEDBACK_COLUMNS) if table is None else table


def _present(root: Path, endpoint: str, ids: list[str], since: datetime, until: datetime) -> set[str]:
    import pyarrow.dataset as ds

    folders = [folder for _, folder in hours(requests_folder(root, endpoint), since, until)]
    table = _read_hours(folders, ["request_id"], ds.field("request_id").isin(ids))
    return set() if table is None else set(table["request_id"].to_pylist())


def known_request_ids(root: Path, endpoint: str, ids: Iterable[str]) -> set[str]:
    """Which of `ids` the store holds requests for: each id is looked for in the hour it names (and the
    next: a request's rows lie in the hour it was answered); an id that names no hour, in the last
    `KNOWN_IDS_DAYS` days."""
    now = datetime.now(UTC)
    by_hour: dict[Hour | None, list[str]] = collections.defaultdict(list)
    for request_id in dict.fromkeys(ids):
        by_hour[_timed_hour(request_id, now)].append(request_id)
    found: set[str] = set()
    for hour, group in by_hour.items():
        if hour is None:
            found |= _present(root, endpoint, group, now - timedelta(days=KNOWN_IDS_DAYS), now + HOUR)
        else:
            found |= _present(root, endpoint, group, hour.start, hour.end + HOUR)
    return found


def labelled(
    root: Path,
    endpoint: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: list[str] | None = None,
) -> Any:
    """The request rows that have ground truth, with the latest label of their request as `label` (and
    only `columns` of the request rows, when given; `request_id` always)."""
    issued_since = since - HOUR if since is not None else None  # a request answered after its hour ended
    feedback = read_feedback(root, endpoint, since=issued_since, until=until).sort_by([("ts", "ascending")])
    latest = feedback.group_by("request_id", use_threads=False).aggregate([("label", "last")])
    latest = latest.select(["request_id", "label_last"]).rename_columns(["request_id", "label"])
    wanted = None if columns is None else list(dict.fromkeys(["request_id", *columns]))
    requests = read_requests(root, endpoint, since=since, until=until, columns=wanted)
    return requests.join(latest, keys="request_id", join_type="inner")
