"""Bounds on the integers people and clients give mlgate: ids and version numbers fit a 32-bit signed
integer column (SQLite's and PostgreSQL's `INTEGER`), byte offsets into a log fit 63 bits."""

from __future__ import annotations

MAX_ROW_ID = 2**31 - 1
MAX_OFFSET = 2**63 - 1


def row_id_in_range(value: int) -> bool:
    return 1 <= value <= MAX_ROW_ID
