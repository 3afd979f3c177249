"""A monitor's window read for its evaluation: the traffic columns of every request row, and of the answered
rows (status below 400) their count, their data-quality counts and their drift rows.

The drift rows are every answered row up to `DRIFT_ROWS`, else a uniform sample of that many: the
distances move by about 1/sqrt(rows), under 0.001 here, far below any threshold. Counts (rows, nulls,
errors, latency) are taken over every row.

Read two ways, with the same figures. `from_rows`: from a table of the window's rows (a window of the last
N rows). `read_window`: hours the window covers whole and that have settled (ended, compacted) come from
their summaries (`mlgate.adapters.monitoring.summaries`, built from the hour's rows the first time a window
needs them, or by the store's upkeep when it compacts the hour); only the rest are read row by row. Beyond
`DRIFT_ROWS` the sample is drawn from each hour in proportion to its answered rows: from the first rows of
a summary's shuffled sample when it holds enough, from the hour's rows otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.adapters.monitoring import summaries
from mlgate.adapters.monitoring.partitions import concat, hours, live_parts, read_parts
from mlgate.adapters.monitoring.store import read_requests
from mlgate.domain.data_quality import ColumnQuality, counts, merged_report, quality_basis, quality_report
from mlgate.domain.request_records import FEATURE_PREFIX, PREDICTION, Hour, requests_folder

DRIFT_ROWS = 1_000_000
TRAFFIC = ["row", "latency_ms", "status", "slot"]  # what endpoint performance reads of every row
NOT_EVALUATED = ("request_id", "client_request_id", "digest")  # columns no signal reads: left on disk
Counts = dict[str, dict[str, int | None]]


@dataclass(frozen=True)
class WindowInputs:
    """`traffic`: a pyarrow Table of `TRAFFIC` for every row; `drift`: the answered rows' features and
    predictions (all, or a uniform sample of `DRIFT_ROWS`); `quality`: against the baseline, None without one."""

    traffic: Any
    answered: int
    drift: Any
    quality: list[ColumnQuality] | None


@dataclass(frozen=True)
class _Piece:
    """Part of a window: its answered rows, their quality counts, and a uniform sample of k of them."""

    answered: int
    quality: Counts
    sample: Callable[[int], Any]


def column_values(table: Any, name: str) -> np.ndarray:
    """A column as numpy: float64 for numbers (NaN for nulls), objects otherwise."""
    import pyarrow as pa

    column = table[name]
    if pa.types.is_floating(column.type):  # nulls become NaN
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    values = column.to_pylist()
    if all(isinstance(v, int | float) or v is None for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(values, dtype=object)


def feature_values(table: Any) -> dict[str, np.ndarray]:
    return {
        name[len(FEATURE_PREFIX) :]: column_values(table, name)
        for name in table.column_names
        if name.startswith(FEATURE_PREFIX)
    }


def _answered(table: Any) -> Any:
    import pyarrow.compute as pc

    if not table.num_rows:
        return table
    mask = pc.less(table["status"], 400)
    return table if pc.all(mask).as_py() is not False else table.filter(mask)


def _signal_columns(table: Any) -> Any:
    return table.select([c for c in table.column_names if c.startswith(FEATURE_PREFIX) or c == PREDICTION])


def _take(table: Any, k: int, seed: int) -> Any:
    """A uniform sample of `k` rows of `table` (all of it when it has no more), in table order."""
    if k >= table.num_rows:
        return table
    return table.take(np.sort(np.random.default_rng(seed).choice(table.num_rows, k, replace=False)))


def _quality_counts(profile: dict[str, Any] | None, answered: Any) -> Counts:
    return {} if profile is None else {q.name: counts(q) for q in quality_report(profile, feature_values(answered))}


def from_rows(table: Any, profile: dict[str, Any] | None) -> WindowInputs:
    """The inputs of a window whose rows are all in `table`."""
    answered = _answered(table)
    rows = answered.num_rows
    quality = quality_report(profile, feature_values(answered)) if profile is not None else None
    return WindowInputs(table.select(TRAFFIC), rows, _take(_signal_columns(answered), DRIFT_ROWS, rows), quality)


def allocate(sizes: list[int], total: int) -> list[int]:
    """`total` rows shared among pieces of `sizes` rows in proportion (largest remainders), none above its size."""
    whole = sum(sizes)
    if whole <= total:
        return list(sizes)
    exact = [size * total / whole for size in sizes]
    shares = [int(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _hour_rows(folder: Path) -> Any:
    return read_parts(live_parts(folder), None, exclude=NOT_EVALUATED)


def summarize_hour(
    summary_root: Path, endpoint: str, hour: Hour, folder: Path, profile: dict[str, Any] | None
) -> summaries.HourSummary:
    """The hour's summary, valid for its parts as they are and holding the counts against `profile`:
    the one on file when it does, else built from the hour's rows and written."""
    place = summaries.folder_of(summary_root, endpoint, hour)
    parts = summaries.parts_key(folder)
    known = summaries.load(place, parts)
    basis = quality_basis(profile) if profile is not None else None
    if known is not None and (basis is None or basis in known.quality):
        return known
    table = _hour_rows(folder)
    answered = _answered(table) if table is not None else None
    rows = answered.num_rows if answered is not None else 0
    quality = dict(known.quality) if known is not None else {}
    if basis is not None:
        quality.pop(basis, None)
        quality[basis] = _quality_counts(profile, answered) if answered is not None else {}
    sample = None
    if known is None and answered is not None:
        seed = int(summaries.parts_digest(parts), 16)
        order = np.random.default_rng(seed).permutation(rows)[: summaries.SAMPLE_ROWS]
        sample = _signal_columns(answered).take(order)
    built = summaries.HourSummary(parts, rows, min(rows, summaries.SAMPLE_ROWS), quality)
    summaries.save(place, built, sample if known is None else None)
    return built


def _summarized_piece(
    summary_root: Path, endpoint: str, hour: Hour, folder: Path, profile: dict[str, Any] | None
) -> _Piece:
    summary = summarize_hour(summary_root, endpoint, hour, folder, profile)
    place = summaries.folder_of(summary_root, endpoint, hour)

    def sample(k: int) -> Any:
        if k <= summary.sample_rows:
            return summaries.read_sample(place, summary, k)
        rows = _hour_rows(folder)
        return _take(_signal_columns(_answered(rows)), k, summary.answered)

    quality = summary.quality.get(quality_basis(profile), {}) if profile is not None else {}
    return _Piece(summary.answered, quality, sample)


def read_window(
    root: Path,
    summary_root: Path,
    endpoint: str,
    *,
    since: datetime,
    until: datetime,
    profile: dict[str, Any] | None,
    settled_before: datetime,
) -> WindowInputs:
    """The window [since, until) of the endpoint's store: hours it covers whole that ended before
    `settled_before` from their summaries, the rest from their rows."""
    whole: list[tuple[Hour, Path]] = []
    for hour, folder in hours(requests_folder(root, endpoint), since, until):
        if hour.hour is not None and since <= hour.start and hour.end <= min(until, settled_before):
            whole.append((hour, folder))
    rest = read_requests(root, endpoint, since=since, until=until, exclude=NOT_EVALUATED, skip=[h for h, _ in whole])
    answered_rest = _answered(rest)
    pieces = [_summarized_piece(summary_root, endpoint, hour, folder, profile) for hour, folder in whole]
    pieces.append(
        _Piece(
            answered_rest.num_rows,
            _quality_counts(profile, answered_rest),
            lambda k: _take(_signal_columns(answered_rest), k, answered_rest.num_rows),
        )
    )
    return _inputs(pieces, _traffic([folder for _, folder in whole], rest), profile)


def _traffic(whole: list[Path], rest: Any) -> Any:
    import pyarrow as pa

    settled = read_parts([p for folder in whole for p in live_parts(folder)], TRAFFIC, dictionary=("slot",))
    recent = rest.select(TRAFFIC)
    if settled is None:
        return recent
    if pa.types.is_string(recent.schema.field("slot").type):
        slot = recent.schema.get_field_index("slot")
        recent = recent.set_column(slot, "slot", recent["slot"].cast(pa.dictionary(pa.int32(), pa.string())))
    return concat([settled, recent])


def _inputs(pieces: list[_Piece], traffic: Any, profile: dict[str, Any] | None) -> WindowInputs:
    import pyarrow as pa

    answered = sum(p.answered for p in pieces)
    shares = allocate([p.answered for p in pieces], DRIFT_ROWS) if profile is not None else [0] * len(pieces)
    samples = [p.sample(k) for p, k in zip(pieces, shares, strict=True) if k]
    drift = concat(samples) if samples else pa.table({})
    quality = merged_report(profile, [(p.answered, p.quality) for p in pieces]) if profile is not None else None
    return WindowInputs(traffic, answered, drift, quality)
