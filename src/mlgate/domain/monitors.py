"""Monitors as data: the signals a monitor watches, its window, its schedule (an interval or a 5-field cron
expression) and the default thresholds. Pure: no clock is read here; callers pass the times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

SIGNALS = ("data-drift", "prediction-drift", "data-quality", "model-performance", "endpoint-performance")
DEFAULT_SIGNALS = ("data-drift", "prediction-drift", "data-quality", "endpoint-performance")
ACTIONS = ("notify", "retrain")
MONITOR_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

# What breaches, per threshold name (flat: a monitor's `thresholds` overrides any of them by name).
# Drift (mlgate.domain.drift): a numeric feature drifts when its normalized Wasserstein distance
# reaches `wasserstein`, a categorical one when its Jensen-Shannon distance reaches `jensen_shannon`; the
# dataset (and the predictions) drift when the share of drifted columns reaches `drift_share`. PSI is
# reported for information against `psi`. Quality: rates over the window's rows. Performance: floors
# (min_*) and ceilings (max_*).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "wasserstein": 0.1,
    "jensen_shannon": 0.1,
    "psi": 0.2,
    "drift_share": 0.5,
    "null_rate": 0.05,
    "type_error_rate": 0.01,
    "out_of_range_rate": 0.05,
    "min_auc": 0.7,
    "min_accuracy": 0.7,
    "max_rmse": float("inf"),
    "max_error_rate": 0.01,
    "max_p95_ms": 250.0,
}

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_ROWS = re.compile(r"^\s*(\d+)\s*rows?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest window or interval: ten years. Longer is no lookback anyone means, and `now - window` must
# stay a date (timedelta and datetime end far sooner than the digits a string can hold).
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """ "30s", "5m", "1h", "2d"."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 30s, 5m, 1h or 2d, got {text!r}")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"expected a duration of at most {MAX_DURATION.days} days, got {text!r}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Window:
    """The lookback of one evaluation: a duration, or the last `rows` request rows."""

    duration: timedelta | None = None
    rows: int | None = None

    @classmethod
    def parse(cls, text: str) -> Window:
        rows = _ROWS.match(text)
        if rows:
            if int(rows.group(1)) < 1:
                raise ValueError(f"expected at least 1 row, got {text!r}")
            return cls(rows=int(rows.group(1)))
        if _DURATION.match(text):
            return cls(duration=parse_duration(text))
        raise ValueError(f"expected a lookback like 30m, 1h, 1d or '5000 rows', got {text!r}")


# -- schedules: an interval, or cron --------------------------------------------------------------------

_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day month weekday (0 and 7: Sunday)
CRON_SCAN_LIMIT = timedelta(days=1)  # after a long pause one run is owed, not every missed one


def _cron_field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"a step must be at least 1 in {part!r}")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            first, last = int(a), int(b)
        else:
            first = int(body)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"expected 5 cron fields (minute hour day month weekday), got {text!r}")
        try:
            parsed = [_cron_field(f, lo, hi) for f, (lo, hi) in zip(fields, _CRON_RANGES, strict=True)]
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
        weekdays = frozenset(0 if d == 7 else d for d in parsed[4])
        minutes, hours, days, months, _ = parsed
        return cls(minutes, hours, days, months, weekdays, any_day=fields[2] == "*", any_weekday=fields[4] == "*")

    def matches(self, at: datetime) -> bool:
        if at.minute not in self.minutes or at.hour not in self.hours or at.month not in self.months:
            return False
        day_ok = at.day in self.days
        weekday_ok = (at.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron: when both are restricted, either one will do
            return day_ok and weekday_ok
        return day_ok or weekday_ok


@dataclass(frozen=True)
class Schedule:
    interval: timedelta | None = None
    cron: Cron | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        if _DURATION.match(text):
            return cls(interval=parse_duration(text))
        try:
            return cls(cron=Cron.parse(text))
        except ValueError as exc:
            raise ValueError(f"expected an interval like 5m or 1h, or a cron expression: {exc}") from None

    def due(self, last_run: datetime | None, now: datetime) -> bool:
        """Whether a run is owed at `now`, given the last one (None: never ran)."""
        if self.interval is not None:
            return last_run is None or now - last_run >= self.interval
        assert self.cron is not None
        minute = now.replace(second=0, microsecond=0)
        if last_run is None:
            return self.cron.matches(minute)
        start = max(last_run.replace(second=0, microsecond=0) + timedelta(minutes=1), now - CRON_SCAN_LIMIT)
        at = start.replace(second=0, microsecond=0)
        while at <= minute:
            if self.cron.matches(at):
                return True
            at += timedelta(minutes=1)
        return False


def thresholds(overrides: dict[str, float]) -> dict[str, float]:
    """The defaults with a monitor's overrides; an unknown name is an error naming the known ones."""
    unknown = sorted(set(overrides) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"unknown threshold(s) {', '.join(unknown)}; expected some of: {', '.join(DEFAULT_THRESHOLDS)}"
        )
    return {**DEFAULT_THRESHOLDS, **{k: float(v) for k, v in overrides.items()}}
