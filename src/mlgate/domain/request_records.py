"""The monitoring store's layout: partitions, part names, request ids that name their hour, shared columns.

The serving host writes request rows (`mlgate.serving.recording`), the host and the control plane write
ground truth, the control plane reads both (`mlgate.adapters.monitoring.store`) and keeps the store
(`mlgate.adapters.monitoring.upkeep`: compaction and retention); this is what they agree on. Pure: the
Parquet itself is the writers' and the readers' business.

Each environment has its own monitoring folder (only that environment's serving host can write it), so
the environment is the first partition; then the endpoint, the UTC day and the UTC hour:

    <monitoring dir>/requests/<endpoint>/<YYYY-MM-DD>/<HH>/part-<unix ms>-<pid>-<n>.parquet
    <monitoring dir>/requests/<endpoint>/<YYYY-MM-DD>/<HH>/compact-<unix ms>-<pid>-<n>.parquet
    <monitoring dir>/feedback/<endpoint>/<YYYY-MM-DD>/<HH>/part-<unix ms>-<pid>-<n>.parquet

A request row lies in the hour of its `ts`. A label lies in the hour its request id names (see
`id_time`), so the labels of a window are read from the window's hours only. A compacted part replaces
the parts its Parquet metadata lists under `REPLACES`; readers skip those until they are deleted. Stores
written before hours were kept have their request parts straight in the day folder and their labels in
`feedback/<endpoint>/`; readers read both layouts.

A request id is 32 hex digits: the time the host issued it (48 bits of Unix milliseconds), then 80
random bits. The random part makes an id nobody can guess; the time names the hour where its rows lie,
which is the index from request id to partition that ground truth is joined through.

A request row: request_id, client_request_id (the caller's own `x-request-id`, or null), row (its index
within the request), ts (UTC), slot, digest and version of the model that answered, status, latency_ms,
one `in:<feature>` column per input feature and `out:prediction`. A request that failed before its input
was read has one row without features. A feedback row: request_id, label, ts, source. Parts written
before the client's id was kept have no client_request_id column; readers take it as null.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REQUESTS = "requests"
FEEDBACK = "feedback"
FEATURE_PREFIX = "in:"
PREDICTION = "out:prediction"
PART_PREFIX, COMPACT_PREFIX, PART_SUFFIX = "part-", "compact-", ".parquet"
REPLACES = b"mlgate.replaces"  # a compacted part's metadata key: the JSON list of the file names it replaces
HOUR = timedelta(hours=1)
_PARTS = itertools.count()
_HOUR_NAME = re.compile(r"^[0-2][0-9]$")
_TIMED_ID = re.compile(r"^[0-9a-f]{32}$")
ID_TIME_HEX = 12  # 48 bits of Unix milliseconds: until the year 10889
ID_RANDOM_BYTES = 10  # 80 random bits


def new_request_id() -> str:
    """A request id nobody can predict that names the millisecond it was issued."""
    return f"{int(time.time() * 1000):012x}{os.urandom(ID_RANDOM_BYTES).hex()}"


def id_time(request_id: str) -> datetime | None:
    """When the host issued `request_id`; None for an id that names no time (an older host's, or a
    caller's)."""
    if not _TIMED_ID.match(request_id):
        return None
    try:
        return datetime.fromtimestamp(int(request_id[:ID_TIME_HEX], 16) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, order=True)
class Hour:
    """One UTC hour of one endpoint's store; `hour` None for a day folder's own parts (the older layout)."""

    day: date
    hour: int | None

    @classmethod
    def of(cls, moment: datetime) -> Hour:
        moment = moment.astimezone(UTC)
        return cls(moment.date(), moment.hour)

    @property
    def start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, self.hour or 0, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + (HOUR if self.hour is not None else timedelta(days=1))

    @property
    def name(self) -> str:
        return self.day.isoformat() if self.hour is None else f"{self.day.isoformat()}/{self.hour:02d}"

    def folder(self, base: Path) -> Path:
        day = base / self.day.isoformat()
        return day if self.hour is None else day / f"{self.hour:02d}"

    def overlaps(self, since: datetime | None, until: datetime | None) -> bool:
        return (since is None or self.end > since) and (until is None or self.start < until)


def parse_day(name: str) -> date | None:
    try:
        return date.fromisoformat(name) if len(name) == 10 else None
    except ValueError:
        return None


def parse_hour(name: str) -> int | None:
    return int(name) if _HOUR_NAME.match(name) and int(name) < 24 else None


def is_part(name: str) -> bool:
    """A part's file name (a part being written has a hidden name, see `new_part`, so is never one)."""
    return name.endswith(PART_SUFFIX) and name.startswith((PART_PREFIX, COMPACT_PREFIX))


def requests_folder(root: Path, endpoint: str) -> Path:
    """The endpoint's request parts, by day and hour."""
    return root / REQUESTS / endpoint


def feedback_folder(root: Path, endpoint: str) -> Path:
    """The endpoint's labels, by the day and hour of the requests they label."""
    return root / FEEDBACK / endpoint


def new_part(folder: Path, *, prefix: str = PART_PREFIX) -> tuple[Path, Path]:
    """A new part's path in `folder`, and the hidden name to write it under before renaming it into place
    (part names never collide between the host's worker processes: the pid is in them)."""
    path = folder / f"{prefix}{int(time.time() * 1000)}-{os.getpid()}-{next(_PARTS)}{PART_SUFFIX}"
    return path, path.with_name(f".{path.name}.tmp")
