"""The monitoring store's layout: where request and feedback parts live, how they are named, their shared columns.

The serving host writes request rows (`mlgate.serving.recording`), the host and the control plane write
ground truth, and the control plane reads both (`mlgate.adapters.monitoring.store`); this is what they
agree on. Pure: the Parquet itself is the writers' and the reader's business.

    <monitoring dir>/requests/<endpoint>/<YYYY-MM-DD>/part-<unix ms>-<pid>-<n>.parquet
    <monitoring dir>/feedback/<endpoint>/part-<unix ms>-<pid>-<n>.parquet

A request row: request_id (the id the serving host issued), client_request_id (the caller's own
`x-request-id`, or null), row (its index within the request), ts (UTC), slot, digest and version of the
model that answered, status, latency_ms, one `in:<feature>` column per input feature and
`out:prediction`. A request that failed before its input was read has one row without features. A
feedback row: request_id (a host-issued id), label, ts, source. Parts written before the client's id was
kept have no client_request_id column; readers take it as null.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import date
from pathlib import Path

REQUESTS = "requests"
FEEDBACK = "feedback"
FEATURE_PREFIX = "in:"
PREDICTION = "out:prediction"
PART_GLOB = "part-*.parquet"  # a part still being written is hidden (see `new_part`), so never matches
_PARTS = itertools.count()


def requests_folder(root: Path, endpoint: str) -> Path:
    """The endpoint's request parts, one folder per UTC day (see `day_folder`)."""
    return root / REQUESTS / endpoint


def day_folder(root: Path, endpoint: str, day: date) -> Path:
    return requests_folder(root, endpoint) / day.isoformat()


def folder_day(folder: Path) -> date | None:
    """The UTC day a request folder holds; None for a folder that is not one."""
    try:
        return date.fromisoformat(folder.name)
    except ValueError:
        return None


def feedback_folder(root: Path, endpoint: str) -> Path:
    return root / FEEDBACK / endpoint


def new_part(folder: Path) -> tuple[Path, Path]:
    """A new part's path in `folder`, and the hidden name to write it under before renaming it into place
    (part names never collide between the host's worker processes: the pid is in them)."""
    path = folder / f"part-{int(time.time() * 1000)}-{os.getpid()}-{next(_PARTS)}.parquet"
    return path, path.with_name(f".{path.name}.tmp")
