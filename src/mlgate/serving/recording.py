"""The serving host's request log: what it scored, buffered in memory and written as Parquet request parts.

Parquet files, append-only, laid out as `mlgate.domain.request_records` says. Why Parquet: a drift scan
reads a few columns of millions of rows, and a columnar, typed, compressed file hands each column to numpy
as one contiguous array without parsing text (CSV, JSON lines) or walking rows (SQLite); part files need
no coordination between the host's worker processes, and a partly written file is never seen (each part
is renamed into place).

`RequestLog` is the writer the serving host uses: `record` only appends to bounded in-memory columns
(scoring never waits on the store); a background thread turns them into Parquet parts
(`mlgate.serving.request_tables`); when the buffers are full the record is dropped and counted. It also
remembers, per endpoint, the ids it recorded lately: the ground truth the host accepts is for those.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mlgate.domain.request_records import requests_folder
from mlgate.serving.request_tables import Block, Entry, blocks_table, by_hour, entries_table, write_part

log = logging.getLogger(__name__)

DEFAULT_CAPACITY_ROWS = 200_000
DEFAULT_FLUSH_ROWS = 50_000
DEFAULT_FLUSH_INTERVAL_S = 1.0
COMPACT_EVERY = 256  # requests a stream keeps as they came before joining their arrays
DEFAULT_RECENT_IDS = 1_000_000  # ids kept in memory for ground truth; older ones are looked up in the store


class _Loose(NamedTuple):  # the latest requests of a stream, as the scoring path appended them
    ids: list[str]
    clients: list[str | None]
    ts: list[float]
    status: list[int]
    latency: list[float]
    rows: list[np.ndarray]
    outputs: list[np.ndarray]


class Stream:
    """What one slot answers with one model, since the last flush: the requests' columns.

    The scoring path appends to plain lists, and every `COMPACT_EVERY` requests concatenates the input and
    output arrays into one block each, on its own thread. Handing thousands of small numpy arrays to the
    writer thread instead costs the scoring path several percent of its throughput: memory one thread
    allocates and another frees stays out of the allocator's caches, and the arrays kept alive for a
    second no longer fit the CPU's. The writer then only joins blocks, a few calls that loop in C."""

    __slots__ = (
        "blocks",
        "clients",
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
        self.blocks: list[Block] = []
        self._loosen()

    def _loosen(self) -> None:
        self.ids: list[str] = []
        self.clients: list[str | None] = []
        self.ts: list[float] = []
        self.status: list[int] = []
        self.latency: list[float] = []
        self.rows: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []

    @property
    def meta(self) -> tuple[str, str, str, int | None]:
        return self.endpoint, self.slot, self.digest, self.version

    def take_loose(self) -> _Loose:
        loose = _Loose(self.ids, self.clients, self.ts, self.status, self.latency, self.rows, self.outputs)
        self._loosen()
        return loose

    def entries(self, loose: _Loose) -> list[Entry]:
        """The requests one by one, for the slow path; one whose input has other columns than this stream's
        (a retry answered by a slot of another signature) keeps its outcome, not its input."""
        width = len(self.names)
        return [
            Entry(*self.meta, request_id, client, ts, status, latency, self.names, rows, out)
            if rows.ndim == 2 and rows.shape[1] == width
            else Entry(*self.meta, request_id, client, ts, status, latency, (), None, None)
            for request_id, client, ts, status, latency, rows, out in zip(*loose, strict=True)
        ]


def _first_outputs(outputs: list[np.ndarray]) -> np.ndarray:
    """The first output of each row, concatenated: one call when the model answers the same shape each time."""
    try:
        joined = np.concatenate(outputs)
    except ValueError:  # mixed shapes (one output per row here, several there)
        joined = np.concatenate([np.asarray(o).reshape(len(o), -1)[:, 0] for o in outputs])
    return joined if joined.ndim == 1 else joined.reshape(len(joined), -1)[:, 0]


def _compact(loose: _Loose) -> Block:
    """Raises ValueError when the requests' inputs do not stack (a signature change under way)."""
    matrix = np.concatenate(loose.rows)
    counts = None
    if len(matrix) != len(loose.rows):
        counts = np.fromiter(map(len, loose.rows), dtype=np.int64, count=len(loose.rows))
    firsts = _first_outputs(loose.outputs)
    if len(firsts) != len(matrix):
        raise ValueError(f"{len(matrix)} input rows but {len(firsts)} outputs")
    return Block(
        loose.ids,
        loose.clients,
        np.array(loose.ts, dtype=np.float64),
        np.array(loose.status, dtype=np.int16),
        np.array(loose.latency, dtype=np.float32),
        matrix,
        firsts,
        counts,
    )


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
        self._odd: list[Entry] = []
        # Ids recorded lately and their endpoint, in two generations of half the bound each.
        self._recent: dict[str, str] = {}
        self._older: dict[str, str] = {}
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
        client_request_id: str | None = None,
    ) -> bool:
        """Queue one request (`request_id` the host's, `client_request_id` the caller's own, if it gave one);
        False (and counted) when the buffers are full. Never blocks on I/O."""
        if rows is None or outputs is None or not len(rows):
            return self._record_odd(stream, (request_id, client_request_id), status, latency_ms, rows, outputs)
        with self._lock:
            if not self._admit(len(rows)):
                return False
            stream.ids.append(request_id)
            stream.clients.append(client_request_id)
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
        ids: tuple[str, str | None],
        status: int,
        latency_ms: float,
        rows: np.ndarray | None,
        outputs: np.ndarray | None,
    ) -> bool:
        """A request without a complete input and output (it failed, or sent no rows)."""
        names = stream.names if rows is not None and len(rows) else ()
        n = len(rows) if names else 1  # type: ignore[arg-type]
        entry = Entry(*stream.meta, *ids, time.time(), status, latency_ms, names, rows, outputs)
        with self._lock:
            if not self._admit(n):
                return False
            self._odd.append(entry)
            self._remember(stream.endpoint, [ids[0]])
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
        self._remember(stream.endpoint, loose.ids)

    def _remember(self, endpoint: str, ids: list[str]) -> None:
        self._recent.update(dict.fromkeys(ids, endpoint))
        if len(self._recent) >= self._recent_bound:
            self._older, self._recent = self._recent, {}

    def recorded(self, endpoint: str, ids: Iterable[str]) -> set[str]:
        """Which of `ids` this log recorded lately for `endpoint` (at least the last half of its `recent_ids`
        bound)."""
        with self._lock:
            loose = {i for stream in self._streams.values() if stream.endpoint == endpoint for i in stream.ids}
            recent, older = self._recent, self._older
            return {i for i in ids if recent.get(i) == endpoint or older.get(i) == endpoint or i in loose}

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
                tables[stream.endpoint].append(blocks_table(*stream.meta[1:], stream.names, blocks))
            by_endpoint: dict[str, list[Entry]] = collections.defaultdict(list)
            for entry in odd:
                by_endpoint[entry.endpoint].append(entry)
            for endpoint, entries in by_endpoint.items():
                tables[endpoint].append(entries_table(entries))
            for endpoint, parts in tables.items():
                table = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")
                for hour, rows_of_hour in by_hour(table):
                    write_part(rows_of_hour, hour.folder(requests_folder(self.root, endpoint)))
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
