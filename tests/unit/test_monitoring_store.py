"""The monitoring store on disk: windows read only their hours, ids are looked up in the hour they name,
compaction never shows a row twice or loses one, retention deletes what policy says, links are never
followed. Real Parquet files in a temporary folder; the retention pass runs against the project's
control database and its audit log."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mlgate.adapters.monitoring import store, upkeep
from mlgate.config import load_settings
from mlgate.domain.request_records import Hour, id_time, new_request_id, requests_folder
from mlgate.domain.store_retention import AGE, SIZE, Retention, Stored, expired
from mlgate.services import audit
from mlgate.services.monitoring import store_upkeep
from mlgate.serving.request_tables import write_part
from tests.support.project import Project

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


def _rows(hour: Hour, ids: list[str], *, feature: float = 1.0, offset_s: float = 0.0) -> pa.Table:
    start = hour.start.timestamp() + offset_s
    ts = [int((start + i) * 1e6) for i in range(len(ids))]
    return pa.table(
        {
            "request_id": pa.array(ids, pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", "UTC")),
            "in:x": pa.array([feature] * len(ids), pa.float64()),
        }
    )


def _ids(table: pa.Table) -> list[str]:
    return sorted(table["request_id"].to_pylist())


def _plant_garbage(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0-0-0.parquet").write_bytes(b"not parquet at all")


def test_a_window_reads_only_its_hours(tmp_path: Path) -> None:
    base = requests_folder(tmp_path, "web")
    hours = [Hour.of(NOW - timedelta(hours=h)) for h in (3, 2, 1)]
    for n, hour in enumerate(hours):
        write_part(_rows(hour, [f"h{n}-{i}" for i in range(5)]), hour.folder(base))
    _plant_garbage(Hour.of(NOW - timedelta(hours=5)).folder(base))  # read, it would fail the whole window
    window = store.read_requests(tmp_path, "web", since=hours[1].start, until=hours[2].end)
    assert _ids(window) == [f"h{n}-{i}" for n in (1, 2) for i in range(5)]
    inside = store.read_requests(tmp_path, "web", since=hours[1].start + timedelta(seconds=2), until=hours[1].end)
    assert _ids(inside) == ["h1-2", "h1-3", "h1-4"]  # the time filter holds within an hour too
    assert store.read_requests(tmp_path, "web", since=NOW + timedelta(days=1)).num_rows == 0


def test_ids_are_looked_up_in_the_hour_they_name_and_older_ids_in_the_last_seven_days(tmp_path: Path) -> None:
    base = requests_folder(tmp_path, "web")
    fresh = [new_request_id() for _ in range(3)]
    issued = id_time(fresh[0])
    assert issued is not None and abs(issued - datetime.now(UTC)) < timedelta(seconds=5)
    write_part(_rows(Hour.of(issued), fresh[:2], offset_s=issued.minute * 60), Hour.of(issued).folder(base))
    for days, request_id in ((3, "older-host-1"), (8, "older-host-2")):  # ids an older host issued
        hour = Hour.of(NOW - timedelta(days=days))
        write_part(_rows(hour, [request_id]), hour.folder(base))
    _plant_garbage(Hour.of(NOW - timedelta(days=1)).folder(base))  # scanning the days would read it
    assert store.known_request_ids(tmp_path, "web", fresh) == set(fresh[:2])
    _plant_garbage(Hour.of(NOW - timedelta(days=5)).folder(base / "x"))  # not a day: never read
    other = Hour.of(NOW - timedelta(days=2)).folder(base)
    _plant_garbage(other)
    with pytest.raises(pa.ArrowInvalid):  # an older id is found by a scan, which reads every part in 7 days
        store.known_request_ids(tmp_path, "web", ["older-host-1"])
    (other / "part-0-0-0.parquet").unlink()
    (Hour.of(NOW - timedelta(days=1)).folder(base) / "part-0-0-0.parquet").unlink()
    assert store.known_request_ids(tmp_path, "web", ["older-host-1", "older-host-2", *fresh]) == {
        "older-host-1",
        *fresh[:2],
    }


def test_labels_go_to_the_hour_of_their_request_and_join_the_window(tmp_path: Path) -> None:
    ids = [new_request_id() for _ in range(4)]
    hour = Hour.of(id_time(ids[0]) or NOW)
    write_part(_rows(hour, ids), hour.folder(requests_folder(tmp_path, "web")))
    store.write_feedback(tmp_path, "web", ids[:3], [1.0, 0.0, 1.0], source="api")
    store.write_feedback(tmp_path, "web", ids[:1], [0.0], source="endpoint")  # a correction: the latest wins
    store.write_feedback(tmp_path, "web", ["older-host-1"], [1.0], source="api")
    assert sorted(p.relative_to(tmp_path).parent.as_posix() for p in tmp_path.glob("feedback/**/part-*")) == [
        "feedback/web",
        *[f"feedback/web/{hour.name}"] * 2,
    ]
    joined = store.labelled(tmp_path, "web", since=hour.start, until=hour.end)
    assert dict(zip(joined["request_id"].to_pylist(), joined["label"].to_pylist(), strict=True)) == {
        ids[0]: 0.0,
        ids[1]: 0.0,
        ids[2]: 1.0,
    }


def _hour_with_parts(tmp_path: Path, hour: Hour, parts: int, rows: int) -> Path:
    folder = hour.folder(requests_folder(tmp_path, "web"))
    rng = np.random.default_rng(0)
    for p in range(parts):  # the host's flushes: each part's rows scattered over the hour
        offsets = rng.uniform(0, 3599, rows)
        table = _rows(hour, [f"p{p}-{i}" for i in range(rows)], feature=float(p))
        table = table.set_column(
            1,
            "ts",
            pa.array(((hour.start.timestamp() + offsets) * 1e6).astype(np.int64)).cast(pa.timestamp("us", "UTC")),
        )
        write_part(table, folder)
    return folder


def test_compaction_shows_every_row_once_while_it_runs_and_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = Hour.of(NOW - timedelta(hours=2))
    folder = _hour_with_parts(tmp_path, hour, parts=12, rows=50)
    before = _ids(store.read_requests(tmp_path, "web"))
    unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # the pass stopped after the rename
    assert upkeep.compact(folder, max_rows=250) == 12
    assert len(list(folder.glob("compact-*"))) == 3 and len(list(folder.glob("part-*"))) == 12
    assert _ids(store.read_requests(tmp_path, "web")) == before  # the parts replaced are skipped
    monkeypatch.setattr(Path, "unlink", unlink)
    for leftover in folder.glob("part-*"):
        leftover.unlink()
    assert _ids(store.read_requests(tmp_path, "web")) == before
    compacted = sorted(folder.glob("compact-*"))
    ts = pq.read_table(compacted[0])["ts"].to_pylist()
    assert ts == sorted(ts) and pq.read_metadata(compacted[0]).num_rows == 250
    late = _rows(hour, ["late-1"])  # the host writes into the hour after it was compacted
    write_part(late, folder)
    assert upkeep.compact(folder, max_rows=250) == 2  # the 100-row compacted part and the late one
    assert _ids(store.read_requests(tmp_path, "web")) == sorted([*before, "late-1"])
    assert sorted(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet")) == [101, 250, 250]


def test_links_the_host_plants_are_never_read_compacted_or_deleted_through(tmp_path: Path) -> None:
    other_env = tmp_path / "production"
    hour = Hour.of(NOW - timedelta(days=200))
    secret = _hour_with_parts(other_env, hour, parts=2, rows=3)
    mine = tmp_path / "dev"
    base = requests_folder(mine, "web")
    base.mkdir(parents=True)
    os.symlink(secret.parent, base / hour.day.isoformat())  # a day that is another store's
    real = Hour.of(NOW - timedelta(days=201))
    write_part(_rows(real, ["mine-1"]), real.folder(base))
    os.symlink(next(secret.glob("part-*")), real.folder(base) / "part-9-9-9.parquet")
    assert _ids(store.read_requests(mine, "web")) == ["mine-1"]
    assert upkeep.compact(real.folder(base), max_rows=1000) == 0
    stored = upkeep.stored_hours(mine, "web")
    assert [s.hour for s in stored] == [real]
    for s, _ in expired([Stored(s, s.hour.end, s.bytes) for s in stored], Retention(timedelta(days=1)), now=NOW):
        upkeep.delete_hour(mine, s)
    assert not real.folder(base).exists() and len(list(secret.glob("part-*"))) == 2


def test_retention_by_age_and_by_size_oldest_first_never_the_hour_under_way() -> None:
    hours = [Stored(f"h{n}", NOW - timedelta(hours=n), 100) for n in (50, 30, 3, 2, 1)]
    under_way = Stored("now", NOW + timedelta(minutes=30), 1000)
    assert expired([*hours, under_way], Retention(max_age=timedelta(hours=24)), now=NOW) == [("h50", AGE), ("h30", AGE)]
    assert expired([*hours, under_way], Retention(max_age=timedelta(hours=40), max_bytes=900), now=NOW) == [
        ("h50", AGE),
        ("h30", SIZE),
        ("h3", SIZE),
        ("h2", SIZE),
        ("h1", SIZE),
    ]  # the current hour alone is still over: it stays
    assert expired(hours, Retention(max_bytes=300), now=NOW) == [("h50", SIZE), ("h30", SIZE)]
    assert expired(hours, Retention(), now=NOW) == []


def test_a_pass_over_the_store_deletes_the_oldest_hours_over_the_size_and_audits_each(project: Project) -> None:
    root = load_settings(project.config).environment("production").monitoring_dir
    rng = np.random.default_rng(1)
    hours = [Hour.of(NOW - timedelta(hours=h)) for h in (9, 8, 7)]
    rows = 150_000  # over 1 MiB an hour: noise does not compress
    for n, hour in enumerate(hours):
        table = _rows(hour, [f"h{n}-{i}" for i in range(rows)]).set_column(2, "in:x", pa.array(rng.random(rows)))
        write_part(table, hour.folder(requests_folder(root, "web")))
    newest = upkeep.stored_hours(root, "web")[-1].bytes
    data = yaml.safe_load(project.config.read_text())
    data["monitoring"] = {"retention": {"max_age_days": None, "max_bytes": newest + 1}, "compact_after_s": 0}
    project.config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = load_settings(project.config)
    db = project.db()
    try:
        report = store_upkeep.sweep(db, settings, now=NOW)
        events = audit.list_events(db, where=audit.AuditFilter(action="monitoring.retention"))
    finally:
        db.dispose()
    assert [d["hour"] for d in report.deleted] == [hours[0].name, hours[1].name]
    assert sorted((e.payload["hour"], e.payload["reason"], e.payload["rows"]) for e in events) == [
        (hours[0].name, SIZE, rows),
        (hours[1].name, SIZE, rows),
    ]
    assert all(e.environment == "production" and e.subject == "endpoint:web" for e in events)
    assert {e.payload["policy"]["max_bytes"] for e in events} == {newest + 1}
    assert store.read_requests(root, "web", columns=["request_id"]).num_rows == rows
    assert not hours[0].folder(requests_folder(root, "web")).exists()
