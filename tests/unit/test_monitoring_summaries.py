"""Hour summaries: a window read from the summaries of its settled hours gives the figures its rows give; a
summary is rebuilt when a part arrives late or the baseline changes, is never believed through a link, is
written by the store's upkeep when it compacts an hour and removed with the hour. Real Parquet files; the
upkeep pass runs against the project's control database."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from mlgate.adapters.monitoring import store, summaries
from mlgate.config import load_settings
from mlgate.domain.profile import build_profile
from mlgate.domain.request_records import Hour, requests_folder
from mlgate.services.monitoring import store_upkeep, window
from mlgate.services.monitoring.evaluation import evaluate
from mlgate.serving.request_tables import write_part
from tests.support.project import Project

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
SIGNALS = ["data-drift", "prediction-drift", "data-quality", "endpoint-performance"]


def _part(hour: Hour, rng: np.random.Generator, rows: int, *, shift: float = 0.0, with_b: bool = True) -> pa.Table:
    """One flush of the host: two slots, a few errors, nulls, values beyond the baseline's range."""
    a = rng.normal(10 + shift, 2, rows)
    a[rng.random(rows) < 0.05] = np.nan
    columns: dict[str, Any] = {
        "request_id": pa.array([f"{hour.name}-{rng.integers(1 << 60)}" for _ in range(rows)]),
        "row": pa.array(np.zeros(rows, np.int32)),
        "ts": pa.array(((hour.start.timestamp() + rng.uniform(0, 3599, rows)) * 1e6).astype(np.int64)).cast(
            pa.timestamp("us", "UTC")
        ),
        "slot": pa.array(rng.choice(["blue", "green"], rows)),
        "status": pa.array(rng.choice([200, 200, 200, 200, 500, 422], rows).astype(np.int16)),
        "latency_ms": pa.array(rng.gamma(2, 2, rows).astype(np.float32)),
        "in:a": pa.array(a, from_pandas=True),
        "out:prediction": pa.array((a > 11).astype(np.float64)),
    }
    if with_b:
        columns["in:b"] = pa.array(rng.choice(["x", "y", "z"], rows))
    return pa.table(columns)


def _store(root: Path) -> list[Hour]:
    """Five hours: three settled ones (one without the feature `b`), the window's first hour (partly in it)
    and the hour under way; several parts each."""
    rng = np.random.default_rng(7)
    hours = [Hour.of(NOW - timedelta(hours=h)) for h in (5, 4, 3, 2, 0)]
    for n, hour in enumerate(hours):
        for _ in range(3):
            write_part(_part(hour, rng, 400, shift=n / 2, with_b=n != 1), hour.folder(requests_folder(root, "web")))
    return hours


def _profile(low: float = 4.0, high: float = 16.0) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    a = np.clip(rng.normal(10, 2, 2000), low, high)
    b = rng.choice(["x", "y"], 2000).astype(object)
    return build_profile(
        data="test@1",
        rows=2000,
        features={"a": a, "b": b},
        label=("y", (a > 11).astype(np.float64)),
        predictions={"prediction": (a > 11).astype(np.float64)},
        sample={"file": "sample.csv", "rows": 2000, "seed": 0, "sha256": ""},
        notes=[],
    )


def _reference() -> Any:
    import pandas as pd

    rng = np.random.default_rng(1)
    a = rng.normal(10, 2, 2000)
    return pd.DataFrame({"a": a, "b": rng.choice(["x", "y"], 2000), "prediction": (a > 11).astype(np.float64)})


def _evaluated(inputs: window.WindowInputs, profile: dict[str, Any], since: datetime) -> dict[str, Any]:
    result = evaluate(
        signal_names=SIGNALS,
        profile=profile,
        sample=_reference(),
        window=inputs,
        labelled=None,
        thresholds=None,
        min_rows=10,
        start=since.timestamp(),
        end=NOW.timestamp(),
    )
    return {"rows": result.rows, **result.values}


def _both(root: Path, profile: dict[str, Any], since: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The window evaluated from summaries (of the hours that ended an hour ago) and from its rows."""
    summarized = window.read_window(
        root,
        root / "summaries",
        "web",
        since=since,
        until=NOW,
        profile=profile,
        settled_before=NOW - timedelta(hours=1),
    )
    rows = window.from_rows(store.read_requests(root, "web", since=since, until=NOW), profile)
    return _evaluated(summarized, profile, since), _evaluated(rows, profile, since)


def _drift_values(values: dict[str, Any], signal: str) -> dict[str, float]:
    return {name: f["value"] for name, f in values[signal]["features"].items()}


def test_a_window_from_summaries_gives_the_figures_of_its_rows(tmp_path: Path) -> None:
    hours = _store(tmp_path)
    since = hours[0].start + timedelta(minutes=20)  # the first hour only partly in the window
    profile = _profile()
    for _ in range(2):  # built from the rows the first time, read from the summaries the second
        summarized, rows = _both(tmp_path, profile, since)
        assert summarized["rows"] == rows["rows"] > 3000
        assert summarized["data-quality"] == rows["data-quality"]
        assert summarized["data-quality"]["features"]["a"]["out_of_range"] > 0
        assert summarized["data-quality"]["features"]["b"]["nulls"] >= 700  # the answered rows of the hour without `b`
        assert summarized["endpoint-performance"] == rows["endpoint-performance"]
        for signal in ("data-drift", "prediction-drift"):
            assert _drift_values(summarized, signal) == pytest.approx(_drift_values(rows, signal), abs=1e-6)
    written = sorted(p.relative_to(tmp_path / "summaries").parent.as_posix() for p in tmp_path.rglob("summary.json"))
    assert written == [f"web/{h.name}" for h in hours[1:4]]  # settled hours the window covers whole
    place = summaries.folder_of(tmp_path / "summaries", "web", hours[2]) / "summary.json"
    record = json.loads(place.read_text())
    for counts in record["quality"].values():
        counts["a"]["nulls"] += 5
    place.write_text(json.dumps(record))
    summarized, rows = _both(tmp_path, profile, since)  # the summary, not the rows, gives that hour's counts
    assert summarized["data-quality"]["features"]["a"]["nulls"] == rows["data-quality"]["features"]["a"]["nulls"] + 5


def test_beyond_the_drift_rows_each_hour_gives_its_share_of_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hours = _store(tmp_path)
    monkeypatch.setattr(window, "DRIFT_ROWS", 1000)
    monkeypatch.setattr(summaries, "SAMPLE_ROWS", 300)  # one summary holds fewer than its share: its rows are read
    profile = _profile()
    inputs = window.read_window(
        tmp_path,
        tmp_path / "summaries",
        "web",
        since=hours[0].start,
        until=NOW,
        profile=profile,
        settled_before=NOW - timedelta(hours=1),
    )
    assert inputs.drift.num_rows == 1000 < inputs.answered
    assert window.allocate([300, 100, 600], 500) == [150, 50, 300]
    assert window.allocate([3, 3, 3], 4) == [2, 1, 1] and window.allocate([3, 4], 100) == [3, 4]
    assert inputs.quality is not None and sum(q.rows for q in inputs.quality if q.name == "a") == inputs.answered


def test_a_late_part_or_another_baseline_makes_a_summary_stale(tmp_path: Path) -> None:
    hours = _store(tmp_path)
    since = hours[1].start
    summarized, _ = _both(tmp_path, _profile(), since)
    late = _part(hours[2], np.random.default_rng(9), 50, shift=50.0)  # the host writes into a settled hour
    write_part(late, hours[2].folder(requests_folder(tmp_path, "web")))
    after, rows = _both(tmp_path, _profile(), since)
    assert after["data-quality"] == rows["data-quality"] and after["rows"] == rows["rows"] > summarized["rows"]
    narrow, narrow_rows = _both(tmp_path, _profile(9.0, 11.0), since)
    assert narrow["data-quality"] == narrow_rows["data-quality"]
    assert narrow["data-quality"]["out_of_range_rate"] > after["data-quality"]["out_of_range_rate"]
    record = json.loads((summaries.folder_of(tmp_path / "summaries", "web", hours[2]) / "summary.json").read_text())
    assert len(record["quality"]) == 2  # the counts against both baselines are kept


def test_a_summary_reached_through_a_link_is_not_believed(tmp_path: Path) -> None:
    hours = _store(tmp_path)
    since = hours[1].start
    honest, rows = _both(tmp_path, _profile(), since)
    place = summaries.folder_of(tmp_path / "summaries", "web", hours[1]) / "summary.json"
    forged = json.loads(place.read_text())
    forged["answered"], forged["quality"] = 10, {k: {} for k in forged["quality"]}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    place.unlink()
    os.symlink(tmp_path / "forged.json", place)
    after, _ = _both(tmp_path, _profile(), since)
    assert after["rows"] == honest["rows"] == rows["rows"] and after["data-quality"] == rows["data-quality"]
    assert not place.is_symlink()  # rebuilt in its place


def test_the_upkeep_summarizes_the_hours_it_compacts_and_deletes_their_summaries_with_them(project: Project) -> None:
    settings = load_settings(project.config)
    environment = settings.environment("production")
    old = Hour.of(NOW - timedelta(days=40))
    rng = np.random.default_rng(3)
    for hour in (old, Hour.of(NOW - timedelta(hours=3))):
        for _ in range(2):
            write_part(_part(hour, rng, 100), hour.folder(requests_folder(environment.monitoring_dir, "web")))
    data = yaml.safe_load(project.config.read_text())
    data["monitoring"] = {"retention": {"max_age_days": 30}, "compact_after_s": 0}
    project.config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = load_settings(project.config)
    db = project.db()
    try:
        report = store_upkeep.sweep(db, settings, now=NOW)
    finally:
        db.dispose()
    assert [d["hour"] for d in report.deleted] == [old.name] and report.compacted_parts == 4
    kept = summaries.folder_of(environment.summary_dir, "web", Hour.of(NOW - timedelta(hours=3)))
    record = json.loads((kept / "summary.json").read_text())
    kept_rows = store.read_requests(environment.monitoring_dir, "web", since=NOW - timedelta(hours=4))
    assert record["answered"] == pc.sum(pc.less(kept_rows["status"], 400)).as_py() > 100
    assert not summaries.folder_of(environment.summary_dir, "web", old).exists()
