"""Benchmark: a monitor's window over 10,000,000 recorded rows and 100,000 labels, today's reader against the store's.

    .venv/bin/python bench/monitoring_store.py [--rows 10000000] [--part-rows 10000] [--labels 100000]

One day of a busy endpoint: `--rows` requests of 8 features, written as the serving host writes them
(parts of `--part-rows` rows, one flush each), plus a tenth as many the day before (outside the window).
The same part files are laid out three ways: as the store was before it was partitioned by hour (day
folders, read by the reader of commit 69de234, kept below as `legacy_*`), partitioned by hour as the host
now writes them, and that store compacted (one sorted part per hour, as the server's upkeep leaves it).

For each: the window read (the day, every column), the window evaluated (read + every signal: data drift,
prediction drift, data quality, endpoint and model performance, as a monitor run does), and ground truth:
`--labels` ids looked up as the feedback routes look them up, then written and joined to the window.
Best of `--repeat` runs each. Not part of the tests; figures in RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ["age", "bmi", "glucose", "pressure", "insulin", "skin", "pedigree", "pregnancies"]
REFERENCE_ROWS = 10_000
DAY = date(2026, 12, 2)


# -- today's reader (commit 69de234), verbatim but for its imports ---------------------------------------


def legacy_read_requests(root: Path, endpoint: str, *, since: datetime, until: datetime) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    base = root / "requests" / endpoint
    folders = [f for f in sorted(base.iterdir()) if since.date() <= date.fromisoformat(f.name) <= until.date()]
    tables = []
    for path in [p for folder in folders for p in sorted(folder.glob("part-*.parquet"))]:
        tables.append(pq.read_table(path))
    table = pa.concat_tables(tables, promote_options="permissive")
    mask = pc.and_(
        pc.greater_equal(table["ts"], pa.scalar(since, pa.timestamp("us", "UTC"))),
        pc.less(table["ts"], pa.scalar(until, pa.timestamp("us", "UTC"))),
    )
    return table.filter(mask)


def legacy_known_request_ids(root: Path, endpoint: str, ids: list[str], *, now: datetime) -> set[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = legacy_read_requests(root, endpoint, since=now - timedelta(days=7), until=now)
    present = pc.is_in(pa.array(ids, pa.string()), value_set=table["request_id"].combine_chunks())
    return {i for i, hit in zip(ids, present.to_pylist(), strict=True) if hit}


def legacy_labelled(root: Path, endpoint: str, *, since: datetime, until: datetime) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / "feedback" / endpoint
    feedback = pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))])
    latest = feedback.sort_by([("ts", "ascending")]).group_by("request_id", use_threads=False)
    latest = latest.aggregate([("label", "last")]).rename_columns(["request_id", "label"])
    requests = legacy_read_requests(root, endpoint, since=since, until=until)
    return requests.join(latest, keys="request_id", join_type="inner")


# -- the data ------------------------------------------------------------------------------------------


def _population(rng: np.random.Generator, rows: int, *, shift: float = 0.0) -> np.ndarray:
    means = np.array([45, 30, 105, 72, 80, 25, 0.5, 3]) * (1 + shift)
    return rng.normal(means, means / 4, size=(rows, len(FEATURES)))


def _part(rng: np.random.Generator, start: float, seconds: float, rows: int) -> Any:
    import pyarrow as pa

    ts = np.sort(start + rng.uniform(0, seconds, rows))
    ms = (ts * 1000).astype(np.int64)
    tails = rng.integers(0, 2**63, size=(rows, 2), dtype=np.int64)
    ids = [
        f"{m:012x}{a & 0xFFFFFFFFFF:010x}{b & 0xFFFFFFFFFF:010x}"
        for m, (a, b) in zip(ms.tolist(), tails.tolist(), strict=True)
    ]
    x = _population(rng, rows, shift=0.1)
    columns: dict[str, Any] = {
        "request_id": pa.array(ids, pa.string()),
        "client_request_id": pa.nulls(rows, pa.string()),
        "row": pa.array(np.zeros(rows, np.int32)),
        "ts": pa.array((ts * 1e6).astype(np.int64)).cast(pa.timestamp("us", "UTC")),
        "slot": pa.array(["blue"] * rows),
        "digest": pa.array(["ab" * 32] * rows),
        "version": pa.array(np.ones(rows, np.int64)),
        "status": pa.array(np.full(rows, 200, np.int16)),
        "latency_ms": pa.array(rng.gamma(2, 2, rows).astype(np.float32)),
    }
    for i, name in enumerate(FEATURES):
        columns[f"in:{name}"] = pa.array(x[:, i])
    columns["out:prediction"] = pa.array((x[:, 2] > 120).astype(np.float64))
    return pa.table(columns)


def write_stores(folder: Path, rows: int, part_rows: int) -> tuple[Path, Path, Path]:
    """The same parts as the older layout, by hour, and by hour compacted."""
    from mlgate.adapters.monitoring import upkeep
    from mlgate.domain.request_records import Hour
    from mlgate.serving.request_tables import by_hour, write_part

    legacy, hourly, compacted = folder / "legacy", folder / "hourly", folder / "compacted"
    rng = np.random.default_rng(0)
    day_start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp()
    for day_offset, total in ((-1, rows // 10), (0, rows)):
        parts = max(1, total // part_rows)
        span = 86400 / parts
        for p in range(parts):
            start = day_start + day_offset * 86400 + p * span
            for hour, table in by_hour(_part(rng, start, span, part_rows)):  # as the host splits a flush
                path = write_part(table, hour.folder(hourly / "requests" / "web"))
                for layout, target in ((legacy, Hour(hour.day, None)), (compacted, hour)):
                    place = target.folder(layout / "requests" / "web")
                    place.mkdir(parents=True, exist_ok=True)
                    os.link(path, place / path.name)
    for _, hour_folder in upkeep.hours(compacted / "requests" / "web"):
        upkeep.compact(hour_folder, max_rows=2_000_000)
    return legacy, hourly, compacted


def _profile(rng: np.random.Generator) -> tuple[dict[str, Any], Any]:
    import pandas as pd

    from mlgate.domain.profile import build_profile

    x = _population(rng, REFERENCE_ROWS)
    prediction = (x[:, 2] > 120).astype(np.float64)
    profile = build_profile(
        data="bench@1",
        rows=REFERENCE_ROWS,
        features={n: x[:, i] for i, n in enumerate(FEATURES)},
        label=("outcome", prediction),
        predictions={"prediction": prediction},
        sample={"file": "sample.csv", "rows": REFERENCE_ROWS, "seed": 0, "sha256": ""},
        notes=[],
    )
    sample = pd.DataFrame(
        {**{n: x[:, i] for i, n in enumerate(FEATURES)}, "outcome": prediction, "prediction": prediction}
    )
    return profile, sample


def _write_flat_labels(root: Path, ids: list[str], labels: list[float]) -> None:
    """Labels as the store kept them before (one flat folder per endpoint)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlgate.domain.request_records import new_part

    folder = root / "feedback" / "web"
    folder.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1e6)
    table = pa.table(
        {
            "request_id": pa.array(ids, pa.string()),
            "label": pa.array(labels, pa.float64()),
            "ts": pa.array([now] * len(ids), pa.timestamp("us", "UTC")),
            "source": pa.array(["api"] * len(ids)),
        }
    )
    pq.write_table(table, new_part(folder)[0])


# -- the measures --------------------------------------------------------------------------------------


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def _evaluate(
    inputs: Any, labelled: Any, profile: dict[str, Any], sample: Any, since: datetime, until: datetime
) -> Any:
    """Every signal over the window: `inputs` is a table of the window's rows, or what `read_window` read."""
    from mlgate.services.monitoring import window
    from mlgate.services.monitoring.evaluation import evaluate

    if not isinstance(inputs, window.WindowInputs):
        inputs = window.from_rows(inputs, profile)
    return evaluate(
        signal_names=["data-drift", "prediction-drift", "data-quality", "endpoint-performance", "model-performance"],
        profile=profile,
        sample=sample,
        window=inputs,
        labelled=labelled,
        thresholds=None,
        min_rows=100,
        start=since.timestamp(),
        end=until.timestamp(),
    )


def _readers(
    root: Path, *, legacy: bool, ids: list[str], since: datetime, until: datetime, profile: dict[str, Any] | None
) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any]]:
    """The window read, the ids looked up, the labels joined: today's reader's or the store's (with
    `profile`: the window read from the summaries of its hours, kept in `root`/summaries)."""
    from mlgate.adapters.monitoring import store
    from mlgate.services.monitoring.runs import PERFORMANCE_COLUMNS
    from mlgate.services.monitoring.window import NOT_EVALUATED, read_window

    if profile is not None:
        return (
            lambda: read_window(
                root, root / "summaries", "web", since=since, until=until, profile=profile, settled_before=until
            ),
            lambda: store.known_request_ids(root, "web", ids),
            lambda: store.labelled(root, "web", since=since, until=until, columns=PERFORMANCE_COLUMNS),
        )
    if legacy:
        return (
            lambda: legacy_read_requests(root, "web", since=since, until=until),
            lambda: legacy_known_request_ids(root, "web", ids, now=until),
            lambda: legacy_labelled(root, "web", since=since, until=until),
        )
    return (
        lambda: store.read_requests(root, "web", since=since, until=until, exclude=NOT_EVALUATED),
        lambda: store.known_request_ids(root, "web", ids),
        lambda: store.labelled(root, "web", since=since, until=until, columns=PERFORMANCE_COLUMNS),
    )


def _summarize(root: Path, profile: dict[str, Any]) -> float:
    """The hours' summaries, as the store's upkeep writes them when it compacts each hour; how long it took."""
    from mlgate.adapters.monitoring import upkeep
    from mlgate.services.monitoring.window import summarize_hour

    started = time.perf_counter()
    for hour, folder in upkeep.hours(root / "requests" / "web"):
        summarize_hour(root / "summaries", "web", hour, folder, profile)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> None:
    from mlgate.adapters.monitoring import store

    since = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    until = since + timedelta(days=1)
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-store-") as tmp:
        started = time.perf_counter()
        legacy, hourly, compacted = write_stores(Path(tmp), args.rows, args.part_rows)
        print(f"wrote {args.rows:,} + {args.rows // 10:,} rows in {time.perf_counter() - started:.1f} s")
        profile, sample = _profile(np.random.default_rng(1))
        window = store.read_requests(compacted, "web", since=since, until=until, columns=["request_id"])
        ids = window["request_id"].take(np.random.default_rng(2).choice(window.num_rows, args.labels, replace=False))
        ids = ids.to_pylist()
        labels = [float(i % 2) for i in range(len(ids))]
        for chunk in range(0, len(ids), 1000):  # labels as they come: 1,000 per call
            batch = (ids[chunk : chunk + 1000], labels[chunk : chunk + 1000])
            _write_flat_labels(legacy, *batch)
            for root in (hourly, compacted):
                store.write_feedback(root, "web", *batch, source="api")
        rows = []
        stores = [
            ("before (69de234), day folders", legacy, None),
            ("by hour", hourly, None),
            ("by hour, compacted", compacted, None),
            ("by hour, compacted, summarized", compacted, profile),
        ]
        for name, root, summarized in stores:
            if summarized is not None:
                print(f"summaries of 24 hours written in {_summarize(root, summarized):.1f} s", flush=True)
            read, known, joined = _readers(
                root, legacy=root is legacy, ids=ids, since=since, until=until, profile=summarized
            )
            read_s, table = best(read, args.repeat)
            known_s, found = best(known, args.repeat)
            join_s, labelled = best(joined, args.repeat)
            eval_s, evaluation = best(
                lambda t=table, lab=labelled: _evaluate(t, lab, profile, sample, since, until), args.repeat
            )
            files = sum(1 for _ in root.glob("requests/web/**/*.parquet"))
            window_rows = table.answered if hasattr(table, "answered") else table.num_rows
            rows.append((name, files, window_rows, read_s, eval_s, len(found), known_s, labelled.num_rows, join_s))
            print(f"{name}: verdict {evaluation.verdict}", flush=True)
        _print(args, rows)


def _print(args: argparse.Namespace, rows: list[tuple[Any, ...]]) -> None:
    load = os.getloadavg()[0]
    print(f"\n{platform.python_version()}, {os.cpu_count()} CPUs, load {load:.1f}; best of {args.repeat} runs")
    print(
        "| store | part files | window rows | read s | evaluate s | window evaluated s"
        " | ids found | ids looked up s | labelled rows | labels joined s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, files, n, read_s, eval_s, found, known_s, labelled, join_s in rows:
        print(
            f"| {name} | {files:,} | {n:,} | {read_s:.3f} | {eval_s:.3f} | {read_s + eval_s:.3f}"
            f" | {found:,} | {known_s:.3f} | {labelled:,} | {join_s:.3f} |"
        )
    base = rows[0]
    for name, _files, _n, read_s, eval_s, _found, known_s, _labelled, join_s in rows[1:]:
        print(
            f"{name}: window evaluated {(base[3] + base[4]) / (read_s + eval_s):.1f}x faster than before,"
            f" ids looked up {base[6] / known_s:.1f}x, labels joined {base[8] / join_s:.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--part-rows", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
