"""Processes mlgate starts detached and may adopt later: a handle `pid:start-time` names one exactly.

The start time (from /proc) tells a process apart from an unrelated one that reuses its pid, so a later
server never signals a stranger.
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22: start time, in clock ticks


def handle(pid: int) -> str:
    return f"{pid}:{start_time(pid) or ''}"


def parse_handle(value: str) -> tuple[int, str | None]:
    pid, _, started = value.partition(":")
    return int(pid), started or None


def handle_alive(value: str) -> bool:
    """Whether the process a handle names still runs: same pid, same start time, not a zombie."""
    pid, started = parse_handle(value)
    if not Path("/proc/self/stat").exists():  # no /proc: all we can ask is whether the pid exists
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return False
    return started is None or (len(fields) > 19 and fields[19] == started)
