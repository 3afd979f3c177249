"""Keeping an environment's monitoring store: compacting an hour's parts, measuring hours, deleting them.

Compaction reads an hour's live parts (a few hundred small ones when the host flushes every second),
sorts their rows by time and writes them as compacted parts of at most `max_rows` rows. Each compacted
part names, in its metadata, the parts it replaces: it is renamed into place first, so a reader at any
moment sees either the old parts or the compacted one in their place, never both and never neither;
then the replaced parts are deleted. A part the host writes into the hour meanwhile is not among them
and stays, to be compacted with the rest at the next pass. Deleting an hour takes its folder away from
readers in one rename, then removes it; the hour's labels go with it.

Run by the control plane only (`mlgate.services.monitoring.store_upkeep`); pyarrow is imported inside.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlgate.adapters.monitoring.partitions import hours, live_parts, part_files, read_parts, subfolders
from mlgate.domain.request_records import (
    COMPACT_PREFIX,
    FEEDBACK,
    REPLACES,
    REQUESTS,
    Hour,
    feedback_folder,
    new_part,
    requests_folder,
)

ROW_GROUP_ROWS = 128 * 1024  # a window's time filter skips whole row groups of a part sorted by time
RETIRED_PREFIX = ".retired-"  # an hour being deleted: hidden from readers


@dataclass(frozen=True)
class StoredHour:
    """One hour of one endpoint's store as it is on disk: its request parts and labels."""

    endpoint: str
    hour: Hour
    folder: Path
    files: int  # every part, replaced ones included
    bytes: int  # requests and labels
    labels_only: bool = False  # `folder` is then the labels' folder

    @property
    def rows(self) -> int:
        """The request rows readers see (read from the parts' footers: asked only of an hour being deleted)."""
        return 0 if self.labels_only else _rows(live_parts(self.folder))


def endpoints(root: Path) -> list[str]:
    """The endpoints with requests or labels in the store."""
    return sorted({f.name for kind in (REQUESTS, FEEDBACK) for f in subfolders(root / kind)})


def _size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _rows(paths: list[Path]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for path in paths:
        try:
            total += pq.read_metadata(path).num_rows
        except (OSError, ValueError):  # a part the host is replacing, or not Parquet: nothing to count
            continue
    return total


def stored_hours(root: Path, endpoint: str) -> list[StoredHour]:
    """The endpoint's hours, oldest first (an hour with labels and no requests is one too)."""
    found: dict[Hour, StoredHour] = {}
    for hour, folder in hours(requests_folder(root, endpoint)):
        files = part_files(folder)
        label_files = part_files(hour.folder(feedback_folder(root, endpoint)))
        found[hour] = StoredHour(endpoint, hour, folder, len(files), _size(files) + _size(label_files))
    for hour, folder in hours(feedback_folder(root, endpoint)):
        if hour not in found:
            files = part_files(folder)
            found[hour] = StoredHour(endpoint, hour, folder, len(files), _size(files), labels_only=True)
    return [found[h] for h in sorted(found)]


def compact(folder: Path, *, max_rows: int) -> int:
    """One hour's live parts below `max_rows` rows rewritten as compacted parts of at most that many rows,
    sorted by time; how many parts were replaced."""
    import pyarrow.parquet as pq

    live = live_parts(folder)
    if len(live) < 2:  # nothing to fold together (an hour already compacted into one part): no footer read
        return 0
    sizes = [(p, pq.read_metadata(p).num_rows) for p in live]
    small = [(p, n) for p, n in sizes if n < max_rows]
    if len(small) < 2:
        return 0
    batches: list[list[Path]] = [[]]
    rows = 0
    for path, n in small:
        if batches[-1] and rows + n > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(path)
        rows += n
    replaced = 0
    for batch in batches:
        if len(batch) > 1:
            _write_compacted(folder, batch)
            replaced += len(batch)
    return replaced


def _write_compacted(folder: Path, batch: list[Path]) -> None:
    import pyarrow.parquet as pq

    table = read_parts(batch, None).sort_by([("ts", "ascending")])
    metadata = dict(table.schema.metadata or {})
    metadata[REPLACES] = json.dumps([p.name for p in batch]).encode()
    table = table.replace_schema_metadata(metadata)
    path, tmp = new_part(folder, prefix=COMPACT_PREFIX)
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS, use_dictionary=["slot", "digest"])
    os.replace(tmp, path)  # from here readers read it, and skip the parts it names
    for replaced in batch:
        replaced.unlink(missing_ok=True)


def delete_hour(root: Path, stored: StoredHour) -> None:
    """The hour's request parts and labels removed; readers stop seeing them at once."""
    labels = stored.hour.folder(feedback_folder(root, stored.endpoint))
    if stored.hour.hour is None:  # the older layout: only the day folder's own parts
        for path in part_files(stored.folder):
            path.unlink(missing_ok=True)
        return
    for folder in (stored.folder, labels):
        if folder.is_dir() and not folder.is_symlink():
            retired = folder.with_name(f"{RETIRED_PREFIX}{folder.name}-{os.getpid()}")
            os.replace(folder, retired)
            shutil.rmtree(retired)


def sweep_leftovers(root: Path) -> int:
    """What a pass that died left of the hours it was deleting; how many removed."""
    removed = 0
    for kind in (REQUESTS, FEEDBACK):
        for endpoint in subfolders(root / kind):
            for day in [endpoint, *subfolders(endpoint)]:
                with os.scandir(day) as entries:
                    stale = [e for e in entries if e.name.startswith(RETIRED_PREFIX)]
                for entry in stale:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    removed += 1
    return removed
