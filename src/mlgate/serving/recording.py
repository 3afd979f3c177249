"""The serving host's request log: what it scored, buffered in memory and written as Parquet request parts.

Parquet files, append-only, laid out as `mlgate.domain.request_records` says. Why Parquet: a drift scan
reads a few columns of millions of rows, and a columnar, typed, compressed file hands each column to numpy
as one contiguous array without parsing text (CSV, JSON lines) or walking rows (SQLite); part files need
no coordination between the host's worker processes, and a partly written file is never seen (each part
is renamed into place).

`RequestLog` is the writer the serving host uses: `record` only appends to bounded in-memory columns
(scoring never waits on the store); a background thread turns them into Parquet parts; when the buffers
are full the record is dropped and counted.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mlgate.domain.request_records import FEATURE_PREFIX, PREDICTION, day_folder, new_part

log = logging.getLogger(__name__)

DEFAULT_CAPACITY_ROWS = 200_000
DEFAULT_FLUSH_ROWS = 50_000
DEFAULT_FLUSH_INTERVAL_S = 1.0
# Dictionary encoding pays for the few-valued text columns only: on the features it costs CPU and, as often
# as not, bytes.
DICTIONARY_COLUMNS = ["slot", "digest"]
COMPACT_EVERY = 256  # requests a stream keeps as they came before joining their arrays
DEFAULT_RECENT_IDS = 1_000_000  # ids kept in memory for ground truth; older ones are looked up in the store


class _Entry(NamedTuple):  # a request without a complete input and output: the rare, slow path
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


class _Loose(NamedTuple):  # the latest requests of a stream, as the scoring path appended them
    ids: list[str]
    ts: list[float]
    status: list[int]
    latency: list[float]
    rows: list[np.ndarray]
    outputs: list[np.ndarray]


class _Block(NamedTuple):  # requests of a stream compacted into arrays
    ids: list[str]
    ts: np.ndarray
    status: np.ndarray
    latency: np.ndarray
    matrix: np.ndarray  # their input rows, one after the other
    firsts: np.ndarray  # the first output of each row
    counts: np.ndarray | None  # rows per request; None when every request has one


class Stream:
    """What one slot answers with one model, since the last flush: the requests' columns.

    The scoring path appends to plain lists, and every `COMPACT_EVERY` requests concatenates the input and
    output arrays into one block each, on its own thread. Handing thousands of small numpy arrays to the
    writer thread instead costs the scoring path several percent of its throughput: memory one thread
    allocates and another frees stays out of the allocator's caches, and the arrays kept alive for a
    second no longer fit the CPU's. The writer then only joins blocks, a few calls that loop in C."""

    __slots__ = (
        "blocks",
        "digest",
        "endpoint",
        "ids",
        "latency",
        "names",
        "outputs",
        "rows",
        "slot",
        "status",
        "ts",
        "version",
    )

    def __init__(self, endpoint: str, slot: str, digest: str, version: int | None, names: tuple[str, ...]) -> None:
        self.endpoint, self.slot, self.digest, self.version, self.names = endpoint, slot, digest, version, names
        self.blocks: list[_Block] = []
        self._loosen()

    def _loosen(self) -> None:
        self.ids: list[str] = []
        self.ts: list[float] = []
        self.status: list[int] = []
        self.latency: list[float] = []
        self.rows: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []

    @property
    def meta(self) -> tuple[str, str, str, int | None]:
        return self.endpoint, self.slot, self.digest, self.version

    def take_loose(self) -> _Loose:
        loose = _Loose(self.ids, self.ts, self.status, self.latency, self.rows, self.outputs)
        self._loosen()
        return loose

    def entries(self, loose: _Loose) -> list[_Entry]:
        """The requests one by one, for the slow path; one whose input has other columns than this stream's
        (a retry answered by a slot of another signature) keeps its outcome, not its input."""
        width = len(self.names)
        return [
            _Entry(*self.meta, request_id, ts, status, latency, self.names, rows, out)
            if rows.ndim == 2 and rows.shape[1] == width
            else _Entry(*self.meta, request_id, ts, status, latency, (), None, None)
            for request_id, ts, status, latency, rows, out in zip(*loose, strict=True)
        ]


def _first_outputs(outputs: list[np.ndarray]) -> np.ndarray:
    """The first output of each row, concatenated: one call when the model answers the same shape each time."""
    try:
        joined = np.concatenate(outputs)
    except ValueError:  # mixed shapes (one output per row here, several there)
        joined = np.concatenate([np.asarray(o).reshape(len(o), -1)[:, 0] for o in outputs])
    return joined if joined.ndim == 1 else joined.reshape(len(joined), -1)[:, 0]


def _compact(loose: _Loose) -> _Block:
    """Raises ValueError when the requests' inputs do not stack (a signature change under way)."""
    matrix = np.concatenate(loose.rows)
    counts = None
    if len(matrix) != len(loose.rows):
        counts = np.fromiter(map(len, loose.rows), dtype=np.int64, count=len(loose.rows))
    firsts = _first_outputs(loose.outputs)
    if len(firsts) != len(matrix):
        raise ValueError(f"{len(matrix)} input rows but {len(firsts)} outputs")
    return _Block(
        loose.ids,
        np.array(loose.ts, dtype=np.float64),
        np.array(loose.status, dtype=np.int16),
        np.array(loose.latency, dtype=np.float32),
        matrix,
        firsts,
        counts,
    )


def _write(table: Any, folder: Path) -> Path:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    path, tmp = new_part(folder)
    pq.write_table(table, tmp, compression="zstd", use_dictionary=DICTIONARY_COLUMNS)
    os.replace(tmp, path)
    return path


def _values(array: np.ndarray) -> Any:
    """A column as Arrow: float64 when numeric, else strings (None stays null)."""
    import pyarrow as pa

    if array.dtype.kind in "iufb":
        return pa.array(array.astype(np.float64, copy=False), type=pa.float64())
    return pa.array([None if x is None else str(x) for x in array.tolist()], type=pa.string())


def _blocks_table(stream: Stream, blocks: list[_Block]) -> Any:
    """A stream's rows as a table, with no Python work per request."""
    import pyarrow as pa

    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    ids = pa.array([i for block in blocks for i in block.ids], type=pa.string())
    ts, status, latency = (joined([getattr(b, name) for b in blocks]) for name in ("ts", "status", "latency"))
    matrix = joined([b.matrix for b in blocks])
    n = len(matrix)
    if all(b.counts is None for b in blocks):  # one row per request: the common case
        row = np.zeros(n, dtype=np.int32)
    else:
        counts = joined([np.ones(len(b.ids), dtype=np.int64) if b.counts is None else b.counts for b in blocks])
        owner = np.repeat(np.arange(len(counts)), counts)
        ids = ids.take(pa.array(owner))
        ts, status, latency = ts[owner], status[owner], latency[owner]
        row = (np.arange(n) - (np.cumsum(counts) - counts)[owner]).astype(np.int32)
    table: dict[str, Any] = {
        "request_id": ids,
        "row": pa.array(row, type=pa.int32()),
        "ts": pa.array((ts * 1e6).astype(np.int64), pa.timestamp("us", "UTC")),
        "slot": pa.repeat(pa.scalar(stream.slot, pa.string()), n),
        "digest": pa.repeat(pa.scalar(stream.digest, pa.string()), n),
        "version": pa.repeat(pa.scalar(stream.version, pa.int64()), n),
        "status": pa.array(status),
        "latency_ms": pa.array(latency),
    }
    for position, name in enumerate(stream.names):
        table[FEATURE_PREFIX + name] = _values(matrix[:, position])
    table[PREDICTION] = _values(joined([b.firsts for b in blocks]))
    return pa.table(table)


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
    """The rows of odd requests that share one input signature (`names`; none for requests that failed
    before their input was read)."""
    import pyarrow as pa

    if names:
        blocks = [e.rows for e in entries if e.rows is not None]
        counts = np.fromiter((len(b) for b in blocks), dtype=np.int64, count=len(blocks))
        matrix = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    else:
        counts = np.ones(len(entries), dtype=np.int64)
        matrix = None

    def per_row(values: list[Any], dtype: Any = object) -> np.ndarray:
        return np.repeat(np.array(values, dtype=dtype), counts)

    starts = np.cumsum(counts) - counts
    row = np.arange(int(counts.sum()), dtype=np.int32) - np.repeat(starts, counts).astype(np.int32)
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


def _entries_table(entries: list[_Entry]) -> Any:
    import pyarrow as pa

    groups: dict[tuple[str, ...], list[_Entry]] = collections.defaultdict(list)
    for entry in entries:
        groups[entry.names if entry.rows is not None and len(entry.rows) else ()].append(entry)
    tables = [_group_table(names, group) for names, group in groups.items()]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def _by_day(table: Any) -> Iterable[tuple[date, Any]]:
    """A table's rows split by their UTC day (one slice in all but the flush that spans midnight)."""
    import pyarrow as pa

    days = table["ts"].cast(pa.int64()).to_numpy() // 86_400_000_000
    unique = np.unique(days)
    for day in unique:
        rows = table if len(unique) == 1 else table.filter(pa.array(days == day))
        yield date(1970, 1, 1) + timedelta(days=int(day)), rows


class RequestLog:
    """Bounded, asynchronous, batched: the serving host's record of what it scored.

    The serving host keeps one `Stream` per slot (`stream(...)`) and calls `record` with it. `record` appends
    under a lock the writer takes only to swap the buffers out; a background thread writes them."""

    def __init__(
        self,
        root: Path,
        *,
        capacity_rows: int = DEFAULT_CAPACITY_ROWS,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        recent_ids: int = DEFAULT_RECENT_IDS,
    ) -> None:
        self.root = root
        self._capacity = capacity_rows
        self._flush_rows = flush_rows
        self._interval = flush_interval_s
        self._streams: dict[tuple[Any, ...], Stream] = {}
        self._odd: list[_Entry] = []
        self._recent: set[str] = set()  # ids recorded lately, in two generations of half the bound each
        self._older: set[str] = set()
        self._recent_bound = max(1, recent_ids // 2)
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

    def stream(self, endpoint: str, slot: str, digest: str, version: int | None, names: tuple[str, ...]) -> Stream:
        """The stream of a slot serving `digest` with input columns `names`: the same object for the same
        arguments, so a spec swap that keeps a slot keeps its buffers."""
        key = (endpoint, slot, digest, version, names)
        with self._lock:
            found = self._streams.get(key)
            if found is None:
                found = self._streams[key] = Stream(endpoint, slot, digest, version, names)
            return found

    def record(
        self,
        stream: Stream,
        request_id: str,
        status: int,
        latency_ms: float,
        rows: np.ndarray | None = None,
        outputs: np.ndarray | None = None,
    ) -> bool:
        """Queue one request; False (and counted) when the buffers are full. Never blocks on I/O."""
        if rows is None or outputs is None or not len(rows):
            return self._record_odd(stream, request_id, status, latency_ms, rows, outputs)
        with self._lock:
            if not self._admit(len(rows)):
                return False
            stream.ids.append(request_id)
            stream.ts.append(time.time())
            stream.status.append(status)
            stream.latency.append(latency_ms)
            stream.rows.append(rows)
            stream.outputs.append(outputs)
            if len(stream.ids) >= COMPACT_EVERY:
                self._compact(stream)
        if self.pending_rows >= self._flush_rows:
            self._wake.set()
        return True

    def _record_odd(
        self,
        stream: Stream,
        request_id: str,
        status: int,
        latency_ms: float,
        rows: np.ndarray | None,
        outputs: np.ndarray | None,
    ) -> bool:
        """A request without a complete input and output (it failed, or sent no rows)."""
        names = stream.names if rows is not None and len(rows) else ()
        n = len(rows) if names else 1  # type: ignore[arg-type]
        entry = _Entry(*stream.meta, request_id, time.time(), status, latency_ms, names, rows, outputs)
        with self._lock:
            if not self._admit(n):
                return False
            self._odd.append(entry)
            self._remember([request_id])
        return True

    def _admit(self, rows: int) -> bool:
        """Under the lock: room for `rows` more, counted as pending; else the request is dropped and counted."""
        if self.pending_rows + rows > self._capacity:
            self.dropped_rows += rows
            self.dropped_requests += 1
            return False
        self.pending_rows += rows
        return True

    def _compact(self, stream: Stream) -> None:
        loose = stream.take_loose()
        try:
            stream.blocks.append(_compact(loose))
        except ValueError:  # inputs or outputs that do not stack: these requests take the slow path
            self._odd.extend(stream.entries(loose))
        self._remember(loose.ids)

    def _remember(self, ids: list[str]) -> None:
        self._recent.update(ids)
        if len(self._recent) >= self._recent_bound:
            self._older, self._recent = self._recent, set()

    def recorded(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` this log recorded lately (at least the last half of its `recent_ids` bound)."""
        with self._lock:
            loose = {i for stream in self._streams.values() for i in stream.ids}
            return {i for i in ids if i in self._recent or i in self._older or i in loose}

    def _run(self) -> None:
        import pyarrow.parquet  # noqa: F401 - imported once here, not in the middle of the first flush

        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()
            if self._stopping.is_set() and not self.pending_rows:
                return

    def flush(self) -> None:
        import pyarrow as pa

        with self._lock:
            for stream in self._streams.values():
                if stream.ids:
                    self._compact(stream)
            taken = [(stream, stream.blocks) for stream in self._streams.values() if stream.blocks]
            for stream, _ in taken:
                stream.blocks = []
            odd, self._odd = self._odd, []
            rows = self.pending_rows
        if not taken and not odd:
            return
        try:
            tables: dict[str, list[Any]] = collections.defaultdict(list)
            for stream, blocks in taken:
                tables[stream.endpoint].append(_blocks_table(stream, blocks))
            by_endpoint: dict[str, list[_Entry]] = collections.defaultdict(list)
            for entry in odd:
                by_endpoint[entry.endpoint].append(entry)
            for endpoint, entries in by_endpoint.items():
                tables[endpoint].append(_entries_table(entries))
            for endpoint, parts in tables.items():
                table = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")
                for day, rows_of_day in _by_day(table):
                    _write(rows_of_day, day_folder(self.root, endpoint, day))
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
