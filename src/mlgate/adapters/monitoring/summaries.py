"""Hour summaries: what a monitor needs of one settled hour of an endpoint's store, kept so that a window
reads a few small files for the hours it covers whole instead of every row of them.

A summary holds, for the hour's answered rows (status below 400): how many there are, the data-quality
counts of each feature against each baseline it was asked for (keyed by the baseline's fingerprint: the
names, kinds and ranges quality reads), and a uniform sample of up to `SAMPLE_ROWS` of their features and
predictions, stored shuffled, so that its first k rows are a uniform sample of k rows. It is valid for
the hour's live parts it names (name and size): a part written or compacted since makes it stale, and it
is then built again from the rows.

Summaries are the control plane's own files, in a folder beside the environment's monitoring store that
no serving host can write (`Environment.summary_dir`): derived from the host's rows, never trusted from
it. They are read only as regular files of bounded size, never through a link.

    <summary dir>/<endpoint>/<YYYY-MM-DD>/<HH>/summary.json
    <summary dir>/<endpoint>/<YYYY-MM-DD>/<HH>/sample-<key>.parquet
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgate.adapters.monitoring.partitions import live_parts
from mlgate.domain.request_records import Hour

SUMMARY = "summary.json"
SAMPLE_ROWS = 65_536  # per hour: a day's window of even traffic draws its drift sample from summaries alone
SAMPLE_GROUP_ROWS = 8192  # a window reads only the row groups of a sample it needs
MAX_SUMMARY_BYTES = 1 << 20
BASELINES_KEPT = 4  # data-quality counts kept per hour: the serving baselines of the last few deployments


@dataclass(frozen=True)
class HourSummary:
    """One hour's summary: valid for `parts`; `quality`: per baseline fingerprint, per feature, the counts
    of `mlgate.domain.data_quality.ColumnQuality` (rows, nulls, type_errors, out_of_range)."""

    parts: list[str]
    answered: int
    sample_rows: int
    quality: dict[str, dict[str, dict[str, int | None]]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return parts_digest(self.parts)


def parts_key(folder: Path) -> list[str]:
    """What a summary of the hour in `folder` is valid for: its live parts, by name and size."""
    key = []
    for path in live_parts(folder):
        try:
            key.append(f"{path.name}:{path.stat().st_size}")
        except FileNotFoundError:  # compacted away meanwhile: the key cannot match any summary
            key.append(f"{path.name}:gone")
    return key


def parts_digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def folder_of(summary_root: Path, endpoint: str, hour: Hour) -> Path:
    return hour.folder(summary_root / endpoint)


def _regular_bytes(path: Path, limit: int) -> bytes | None:
    """The file's bytes if it is a regular file (not a link) of at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return handle.read(limit + 1)[:limit]


def _counts(value: Any) -> dict[str, dict[str, int | None]] | None:
    if not isinstance(value, dict):
        return None
    out: dict[str, dict[str, int | None]] = {}
    for feature, counts in value.items():
        if not isinstance(counts, dict):
            return None
        fields = {k: counts.get(k) for k in ("rows", "nulls", "type_errors", "out_of_range")}
        if not all(isinstance(v, int) and v >= 0 for k, v in fields.items() if k != "out_of_range"):
            return None
        if fields["out_of_range"] is not None and not isinstance(fields["out_of_range"], int):
            return None
        out[str(feature)] = fields
    return out


def load(folder: Path, parts: list[str]) -> HourSummary | None:
    """The summary in `folder` if it is valid for `parts`; None if there is none, it is stale or unreadable."""
    raw = _regular_bytes(folder / SUMMARY, MAX_SUMMARY_BYTES)
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("parts") != parts:
        return None
    answered, sample_rows, quality = record.get("answered"), record.get("sample_rows"), record.get("quality")
    if not (isinstance(answered, int) and isinstance(sample_rows, int) and 0 <= sample_rows <= answered):
        return None
    checked = {str(k): _counts(v) for k, v in quality.items()} if isinstance(quality, dict) else None
    if checked is None or any(v is None for v in checked.values()):
        return None
    summary = HourSummary(parts, answered, sample_rows, {k: v for k, v in checked.items() if v is not None})
    sample = folder / f"sample-{summary.key}.parquet"
    if sample_rows and not (sample.is_file() and not sample.is_symlink()):
        return None  # its sample is gone: built again
    return summary


def save(folder: Path, summary: HourSummary, sample: Any | None) -> None:
    """The summary written (with its sample, when given: a pyarrow Table of the hour's answered rows'
    features and predictions, already shuffled); samples of older keys removed."""
    import pyarrow.parquet as pq

    if folder.is_symlink():
        raise OSError(f"{folder} is a link")
    folder.mkdir(parents=True, exist_ok=True)
    sample_path = folder / f"sample-{summary.key}.parquet"
    if sample is not None:
        tmp = folder / f".{sample_path.name}.tmp"
        sample = sample.combine_chunks()
        pq.write_table(sample, tmp, compression="lz4", use_dictionary=False, row_group_size=SAMPLE_GROUP_ROWS)
        os.replace(tmp, sample_path)
    quality = dict(list(summary.quality.items())[-BASELINES_KEPT:])
    record = {"parts": summary.parts, "answered": summary.answered, "sample_rows": summary.sample_rows}
    tmp = folder / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps({**record, "quality": quality}))
    os.replace(tmp, folder / SUMMARY)
    for stale in folder.glob("sample-*.parquet"):
        if stale != sample_path:
            stale.unlink(missing_ok=True)


def read_sample(folder: Path, summary: HourSummary, rows: int) -> Any:
    """The first `rows` rows of the hour's shuffled sample (a uniform sample of that many answered rows)."""
    import pyarrow.parquet as pq

    path = folder / f"sample-{summary.key}.parquet"
    if path.is_symlink():
        raise FileNotFoundError(path)
    sample = pq.ParquetFile(path)
    groups = range(min(sample.num_row_groups, -(-rows // SAMPLE_GROUP_ROWS)))
    return sample.read_row_groups(groups).slice(0, rows)


def delete(summary_root: Path, endpoint: str, hour: Hour) -> None:
    """The hour's summary removed (its rows were deleted)."""
    folder = folder_of(summary_root, endpoint, hour)
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
