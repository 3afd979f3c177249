"""Which hours of a monitoring store retention deletes: pure, from the hours' ends and sizes and the policy.

By age: every hour that ended more than `max_age` ago. By size: while the store is over `max_bytes`, the
oldest hours left, across the environment's endpoints; never the hour under way (its rows are still
being written), so a store whose current hour alone is over the limit stays over it until that hour ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

AGE, SIZE = "age", "size"
Item = TypeVar("Item")


@dataclass(frozen=True)
class Retention:
    max_age: timedelta | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Stored(Generic[Item]):
    item: Item
    end: datetime
    bytes: int


def expired(hours: Sequence[Stored[Item]], policy: Retention, *, now: datetime) -> list[tuple[Item, str]]:
    """The items to delete, oldest first, each with why: `age` or `size`."""
    ordered = sorted(hours, key=lambda h: h.end)
    doomed: list[tuple[Item, str]] = []
    kept: list[Stored[Item]] = []
    for hour in ordered:
        if policy.max_age is not None and hour.end <= now - policy.max_age:
            doomed.append((hour.item, AGE))
        else:
            kept.append(hour)
    if policy.max_bytes is not None:
        total = sum(h.bytes for h in kept)
        for hour in kept:
            if total <= policy.max_bytes or hour.end > now:
                break
            doomed.append((hour.item, SIZE))
            total -= hour.bytes
    return doomed
