"""An environment's monitoring store: the requests its serving host scored, and their ground truth.

Parquet files, append-only. Why Parquet: a drift scan reads a few columns of millions of rows, and a
columnar, typed, compressed file hands each column to numpy as one contiguous array without parsing
text (CSV, JSON lines) or walking rows (SQLite); part files need no coordination between the host's
worker processes, and a partly written file is never seen (each part is renamed into place).

    <monitoring dir>/requests/<endpoint>/<YYYY-MM-DD>/part-<unix ms>-<pid>-<n>.parquet
    <monitoring dir>/feedback/<endpoint>/part-<unix ms>-<pid>-<n>.parquet

A request row: request_id, row (its index within the request), ts (UTC), slot, digest and version of the
model that answered, status, latency_ms, one `in:<feature>` column per input feature and
`out:prediction`. A request that failed before its input was read has one row without features.

`RequestLog` is the writer the serving host uses: `record` only appends to a bounded queue (scoring never
waits on the store); a background thread turns the queue into Parquet parts; a full queue drops the
record and counts it.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REQUESTS = "requests"
FEEDBACK = "feedback"
FEATURE_PREFIX = "in:"
PREDICTION = "out:prediction"
DEFAULT_CAPACITY_ROWS = 200_000
DEFAULT_FLUSH_ROWS = 50_000
DEFAULT_FLUSH_INTERVAL_S = 1.0
KNOWN_IDS_DAYS = 7
_PARTS = itertools.count()


@dataclass(frozen=True)
class _Entry:
    endpoint: str
    slot: str
    digest: str
    version: int | None
    request_id: str
    ts: float
    status: int
    latency_ms: float
    names: tuple[str, ...]
    rows: np.ndarray | None
    outputs: np.ndarray | None


def _part_name() -> str:
    return f"part-{int(time.time() * 1000)}-{os.getpid()}-{next(_PARTS)}.parquet"


def _write(table: Any, folder: Path) -> Path:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _part_name()
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def _column(parts: list[np.ndarray | None], counts: list[int]) -> Any:
    """One column over many requests (None: a request without it, null there): float64 when every value
    is numeric, else strings."""
    import pyarrow as pa

    present = [p for p in parts if p is not None]
    if all(p.dtype.kind in "iufb" for p in present):
        values = np.concatenate(
            [p.astype(np.float64) if p is not None else np.zeros(n) for p, n in zip(parts, counts, strict=True)]
        )
        mask = np.concatenate([np.full(n, p is None) for p, n in zip(parts, counts, strict=True)])
        return pa.array(values, type=pa.float64(), mask=mask if mask.any() else None)
    flat: list[str | None] = []
    for p, n in zip(parts, counts, strict=True):
        flat.extend([None] * n if p is None else [None if x is None else str(x) for x in p.tolist()])
    return pa.array(flat, type=pa.string())


def _requests_table(entries: list[_Entry]) -> Any:
    import pyarrow as pa

    counts = [len(e.rows) if e.rows is not None and len(e.rows) else 1 for e in entries]
    total = sum(counts)

    def repeat(values: list[Any]) -> list[Any]:
        return [v for v, n in zip(values, counts, strict=True) for _ in range(n)]

    row_index = np.concatenate([np.arange(n, dtype=np.int32) for n in counts])
    columns: dict[str, Any] = {
        "request_id": pa.array(repeat([e.request_id for e in entries]), type=pa.string()),
        "row": pa.array(row_index, type=pa.int32()),
        "ts": pa.array(
            (np.repeat(np.array([e.ts for e in entries]), counts) * 1e6).astype(np.int64),
            type=pa.timestamp("us", "UTC"),
        ),
        "slot": pa.array(repeat([e.slot for e in entries]), type=pa.string()),
        "digest": pa.array(repeat([e.digest for e in entries]), type=pa.string()),
        "version": pa.array(repeat([e.version for e in entries]), type=pa.int64()),
        "status": pa.array(np.repeat(np.array([e.status for e in entries], dtype=np.int16), counts)),
        "latency_ms": pa.array(np.repeat(np.array([e.latency_ms for e in entries], dtype=np.float32), counts)),
    }
    names = list(dict.fromkeys(name for e in entries for name in e.names))
    for name in names:
        parts = [
            entry.rows[:, entry.names.index(name)]
            if entry.rows is not None and len(entry.rows) and name in entry.names
            else None
            for entry in entries
        ]
        columns[FEATURE_PREFIX + name] = _column(parts, counts)
    outputs = [
        np.asarray(e.outputs).reshape(len(e.outputs), -1)[:, 0] if e.outputs is not None and len(e.outputs) else None
        for e in entries
    ]
    columns[PREDICTION] = _column(outputs, counts)
    table = pa.table(columns)
    assert table.num_rows == total
    return table


class RequestLog:
    """Bounded, asynchronous, batched: the serving host's record of what it scored."""

    def __init__(
        self,
        root: Path,
        *,
        capacity_rows: int = DEFAULT_CAPACITY_ROWS,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        self.root = root
        self._capacity = capacity_rows
        self._flush_rows = flush_rows
        self._interval = flush_interval_s
        self._queue: collections.deque[_Entry] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.pending_rows = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.dropped_requests = 0
        self.failed_writes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def record(
        self,
        *,
        endpoint: str,
        slot: str,
        digest: str,
        version: int | None,
        request_id: str,
        status: int,
        latency_ms: float,
        names: tuple[str, ...] = (),
        rows: np.ndarray | None = None,
        outputs: np.ndarray | None = None,
    ) -> bool:
        """Queue one request; False (and counted) when the queue is full. Never blocks on I/O."""
        n = len(rows) if rows is not None and len(rows) else 1
        with self._lock:
            if self.pending_rows + n > self._capacity:
                self.dropped_rows += n
                self.dropped_requests += 1
                return False
            self.pending_rows += n
        entry = _Entry(
            endpoint, slot, digest, version, request_id, time.time(), status, latency_ms, names, rows, outputs
        )
        self._queue.append(entry)
        if self.pending_rows >= self._flush_rows:
            self._wake.set()
        return True

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()
            if self._stopping.is_set() and not self._queue:
                return

    def flush(self) -> None:
        entries: list[_Entry] = []
        while self._queue:
            entries.append(self._queue.popleft())
        if not entries:
            return
        rows = sum(len(e.rows) if e.rows is not None and len(e.rows) else 1 for e in entries)
        by_endpoint: dict[tuple[str, date], list[_Entry]] = collections.defaultdict(list)
        for entry in entries:
            by_endpoint[(entry.endpoint, datetime.fromtimestamp(entry.ts, UTC).date())].append(entry)
        try:
            for (endpoint, day), group in by_endpoint.items():
                _write(_requests_table(group), self.root / REQUESTS / endpoint / day.isoformat())
            self.written_rows += rows
        except Exception:  # a full disk must not take scoring down: count it, log it, go on
            self.failed_writes += 1
            log.exception("writing %d monitoring rows failed; they are lost", rows)
        finally:
            with self._lock:
                self.pending_rows -= rows

    def stats(self) -> dict[str, int]:
        return {
            "pending_rows": self.pending_rows,
            "written_rows": self.written_rows,
            "dropped_rows": self.dropped_rows,
            "dropped_requests": self.dropped_requests,
            "failed_writes": self.failed_writes,
        }


# --- reading --------------------------------------------------------------------------------------


def _day_folders(root: Path, endpoint: str, since: datetime | None, until: datetime | None) -> list[Path]:
    base = root / REQUESTS / endpoint
    if not base.is_dir():
        return []
    first = since.astimezone(UTC).date() if since else date.min
    last = until.astimezone(UTC).date() if until else date.max
    found = []
    for folder in sorted(base.iterdir()):
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if first <= day <= last:
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

    files = [p for folder in _day_folders(root, endpoint, since, until) for p in sorted(folder.glob("part-*.parquet"))]
    needed = None if columns is None else list(dict.fromkeys([*columns, "ts"]))
    table = _read_parts(files, needed)
    if table is None:
        return pa.table(
            {
                "request_id": pa.array([], pa.string()),
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
    _write(table, root / FEEDBACK / endpoint)


def read_feedback(root: Path, endpoint: str) -> Any:
    import pyarrow as pa

    folder = root / FEEDBACK / endpoint
    table = _read_parts(sorted(folder.glob("part-*.parquet")) if folder.is_dir() else [], None)
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
