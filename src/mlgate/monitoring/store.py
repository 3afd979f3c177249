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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

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


class _Entry(NamedTuple):  # a tuple: the cheapest record to make on the scoring path
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


def _values(array: np.ndarray) -> Any:
    """A column as Arrow: float64 when numeric, else strings (None stays null)."""
    import pyarrow as pa

    if array.dtype.kind in "iufb":
        return pa.array(array.astype(np.float64, copy=False), type=pa.float64())
    return pa.array([None if x is None else str(x) for x in array.tolist()], type=pa.string())


def _outputs(outputs: list[np.ndarray | None], counts: np.ndarray) -> Any:
    """The first output of each row; null for a request whose model failed."""
    import pyarrow as pa

    firsts = [None if o is None else np.asarray(o).reshape(len(o), -1)[:, 0] for o in outputs]
    if all(f is not None for f in firsts):
        return _values(np.concatenate([f for f in firsts if f is not None]))
    if all(f is None or f.dtype.kind in "iufb" for f in firsts):
        values = np.concatenate(
            [np.zeros(n) if f is None else f.astype(np.float64) for f, n in zip(firsts, counts, strict=True)]
        )
        mask = np.concatenate([np.full(n, f is None) for f, n in zip(firsts, counts, strict=True)])
        return pa.array(values, type=pa.float64(), mask=mask)
    text: list[str | None] = []
    for f, n in zip(firsts, counts, strict=True):
        text.extend([None] * int(n) if f is None else [str(x) for x in f.tolist()])
    return pa.array(text, type=pa.string())


def _group_table(names: tuple[str, ...], entries: list[_Entry]) -> Any:
    """The rows of requests that share one input signature (`names`; none for failed requests), built with
    a handful of array operations, not per request: the writer thread shares the interpreter with scoring."""
    import pyarrow as pa

    if names:
        blocks = [e.rows for e in entries if e.rows is not None]
        counts = np.fromiter((len(b) for b in blocks), dtype=np.int64, count=len(blocks))
        matrix = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    else:
        counts = np.ones(len(entries), dtype=np.int64)
        matrix = None
    starts = np.cumsum(counts) - counts
    row = np.arange(int(counts.sum()), dtype=np.int32) - np.repeat(starts, counts).astype(np.int32)

    def per_row(values: list[Any], dtype: Any = object) -> np.ndarray:
        return np.repeat(np.array(values, dtype=dtype), counts)

    columns: dict[str, Any] = {
        "request_id": pa.array(per_row([e.request_id for e in entries]), type=pa.string()),
        "row": pa.array(row, type=pa.int32()),
        "ts": pa.array(
            (per_row([e.ts for e in entries], np.float64) * 1e6).astype(np.int64), pa.timestamp("us", "UTC")
        ),
        "slot": pa.array(per_row([e.slot for e in entries]), type=pa.string()),
        "digest": pa.array(per_row([e.digest for e in entries]), type=pa.string()),
        "version": pa.array(per_row([e.version for e in entries]), type=pa.int64()),
        "status": pa.array(per_row([e.status for e in entries], np.int16)),
        "latency_ms": pa.array(per_row([e.latency_ms for e in entries], np.float32)),
    }
    if matrix is not None:
        for position, name in enumerate(names):
            columns[FEATURE_PREFIX + name] = _values(matrix[:, position])
        columns[PREDICTION] = _outputs([e.outputs for e in entries], counts)
    return pa.table(columns)


def _requests_table(entries: list[_Entry]) -> Any:
    import pyarrow as pa

    groups: dict[tuple[str, ...], list[_Entry]] = collections.defaultdict(list)
    for entry in entries:
        groups[entry.names if entry.rows is not None and len(entry.rows) else ()].append(entry)
    tables = [_group_table(names, group) for names, group in groups.items()]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


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
        import pyarrow.parquet  # noqa: F401 - imported once here, not in the middle of the first flush

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
