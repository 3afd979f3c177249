"""The request log's rows as Arrow tables and Parquet parts: the columns `mlgate.domain.request_records` names.

`mlgate.serving.recording` buffers what the host scored as `Block`s (requests compacted into arrays, the
common case) and `Entry`s (requests without a complete input and output, one by one); this module turns
both into tables, splits them by UTC hour and writes each as a part. pyarrow is imported inside each
function: the writer thread pays for it, never the scoring path.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mlgate.domain.request_records import FEATURE_PREFIX, PREDICTION, Hour, new_part

# Dictionary encoding pays for the few-valued text columns only: on the features it costs CPU and, as often
# as not, bytes.
DICTIONARY_COLUMNS = ["slot", "digest"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Entry(NamedTuple):  # a request without a complete input and output: the rare, slow path
    endpoint: str
    slot: str
    digest: str
    version: int | None
    request_id: str
    client_request_id: str | None
    ts: float
    status: int
    latency_ms: float
    names: tuple[str, ...]
    rows: np.ndarray | None
    outputs: np.ndarray | None


class Block(NamedTuple):  # requests of a stream compacted into arrays
    ids: list[str]
    clients: list[str | None]  # the callers' own ids
    ts: np.ndarray
    status: np.ndarray
    latency: np.ndarray
    matrix: np.ndarray  # their input rows, one after the other
    firsts: np.ndarray  # the first output of each row
    counts: np.ndarray | None  # rows per request; None when every request has one


def write_part(table: Any, folder: Path) -> Path:
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


def blocks_table(slot: str, digest: str, version: int | None, names: tuple[str, ...], blocks: list[Block]) -> Any:
    """A stream's rows (one slot, one model, input columns `names`) as a table, with no Python work per
    request."""
    import pyarrow as pa

    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    ids = pa.array([i for block in blocks for i in block.ids], type=pa.string())
    clients = pa.array([c for block in blocks for c in block.clients], type=pa.string())
    ts, status, latency = (joined([getattr(b, name) for b in blocks]) for name in ("ts", "status", "latency"))
    matrix = joined([b.matrix for b in blocks])
    n = len(matrix)
    if all(b.counts is None for b in blocks):  # one row per request: the common case
        row = np.zeros(n, dtype=np.int32)
    else:
        counts = joined([np.ones(len(b.ids), dtype=np.int64) if b.counts is None else b.counts for b in blocks])
        owner = np.repeat(np.arange(len(counts)), counts)
        ids, clients = ids.take(pa.array(owner)), clients.take(pa.array(owner))
        ts, status, latency = ts[owner], status[owner], latency[owner]
        row = (np.arange(n) - (np.cumsum(counts) - counts)[owner]).astype(np.int32)
    table: dict[str, Any] = {
        "request_id": ids,
        "client_request_id": clients,
        "row": pa.array(row, type=pa.int32()),
        "ts": pa.array((ts * 1e6).astype(np.int64), pa.timestamp("us", "UTC")),
        "slot": pa.repeat(pa.scalar(slot, pa.string()), n),
        "digest": pa.repeat(pa.scalar(digest, pa.string()), n),
        "version": pa.repeat(pa.scalar(version, pa.int64()), n),
        "status": pa.array(status),
        "latency_ms": pa.array(latency),
    }
    for position, name in enumerate(names):
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


def _group_table(names: tuple[str, ...], entries: list[Entry]) -> Any:
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
        "client_request_id": pa.array(per_row([e.client_request_id for e in entries]), type=pa.string()),
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


def entries_table(entries: list[Entry]) -> Any:
    import pyarrow as pa

    groups: dict[tuple[str, ...], list[Entry]] = collections.defaultdict(list)
    for entry in entries:
        groups[entry.names if entry.rows is not None and len(entry.rows) else ()].append(entry)
    tables = [_group_table(names, group) for names, group in groups.items()]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def by_hour(table: Any) -> Iterable[tuple[Hour, Any]]:
    """A table's rows split by their UTC hour (one slice in all but the flush that spans the hour's end)."""
    import pyarrow as pa

    hours = table["ts"].cast(pa.int64()).to_numpy() // 3_600_000_000
    unique = np.unique(hours)
    for hour in unique:
        rows = table if len(unique) == 1 else table.filter(pa.array(hours == hour))
        yield Hour.of(EPOCH + timedelta(hours=int(hour))), rows
