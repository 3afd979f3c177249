"""Small charts drawn on the server as inline SVG: grouped bars (metrics against the champion),
histograms (a baseline profile's bins) and lines over time against a threshold (a monitor's results).
No JavaScript; every label is escaped; each chart has a title and a text description for screen readers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

WIDTH = 360
BAR_HEIGHT = 14
ROW_GAP = 10
LABEL_W = 130
VALUE_W = 60
SERIES_CLASSES = ("series-a", "series-b", "series-c")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def grouped_bars(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """One row per label, one horizontal bar per series, scaled to the largest absolute value."""
    values = [abs(v) for s in series for v in s.values if v is not None]
    top = max(values, default=0.0) or 1.0
    plot_w = WIDTH - LABEL_W - VALUE_W
    group_h = len(series) * BAR_HEIGHT + ROW_GAP
    legend_h = 18
    height = legend_h + len(labels) * group_h + 4
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, s in enumerate(series):
        x = LABEL_W + i * 110
        css = SERIES_CLASSES[i % len(SERIES_CLASSES)]
        parts.append(
            f'<rect class="{css}" x="{x}" y="3" width="10" height="10"/>'
            f'<text x="{x + 14}" y="12" class="legend">{escape(s.name)}</text>'
        )
    for row, label in enumerate(labels):
        y0 = legend_h + row * group_h
        parts.append(
            f'<text x="{LABEL_W - 6}" y="{y0 + len(series) * BAR_HEIGHT / 2 + 4:.1f}" text-anchor="end" '
            f'class="label">{escape(label)}</text>'
        )
        for i, s in enumerate(series):
            value = s.values[row] if row < len(s.values) else None
            y = y0 + i * BAR_HEIGHT
            css = SERIES_CLASSES[i % len(SERIES_CLASSES)]
            if value is None:
                parts.append(f'<text x="{LABEL_W}" y="{y + 11}" class="value">n/a</text>')
                continue
            w = max(1.0, plot_w * abs(value) / top)
            parts.append(
                f'<rect class="{css}" x="{LABEL_W}" y="{y + 1}" width="{w:.1f}" height="{BAR_HEIGHT - 2}">'
                f"<title>{escape(s.name)} {escape(label)}: {_fmt(value)}</title></rect>"
                f'<text x="{LABEL_W + w + 4:.1f}" y="{y + 11}" class="value">{_fmt(value)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (built from escaped labels and formatted numbers only)


def histogram(
    title: str, labels: Sequence[str], counts: Sequence[int], *, width: int = 220, height: int = 70
) -> Markup:
    """Vertical bars, one per bin; each bar's tooltip names its bin and count."""
    n = max(1, len(counts))
    top = max(counts, default=0) or 1
    bar_w = width / n
    parts = [
        f'<svg class="chart histogram" role="img" viewBox="0 0 {width} {height + 14}" width="{width}" '
        f'height="{height + 14}" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, count in enumerate(counts):
        h = max(1.0, height * count / top) if count else 0.0
        label = labels[i] if i < len(labels) else str(i)
        parts.append(
            f'<rect class="series-a" x="{i * bar_w + 1:.1f}" y="{height - h:.1f}" width="{max(1.0, bar_w - 2):.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {count}</title></rect>'
        )
    if labels:
        parts.append(f'<text x="0" y="{height + 12}" class="axis">{escape(labels[0].split(" ")[0])}</text>')
        parts.append(
            f'<text x="{width}" y="{height + 12}" text-anchor="end" class="axis">'
            f"{escape(labels[-1].split(' ')[-1])}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (built from escaped labels and formatted numbers only)


def profile_histogram(column: dict[str, object]) -> Markup | None:
    """A baseline profile column's bins as a histogram, or None when it has none."""
    bins = column.get("bins")
    if not isinstance(bins, dict):
        return None
    counts = [int(c) for c in bins.get("counts") or []]
    if not counts:
        return None
    name = str(column.get("name", ""))
    if "edges" in bins:
        edges = [float(e) for e in bins["edges"]]
        labels = [f"{_fmt(edges[i])} to {_fmt(edges[i + 1])}" for i in range(min(len(counts), len(edges) - 1))]
    else:
        labels = [str(c) for c in bins.get("categories") or []]
    return histogram(f"{name}: training data distribution", labels, counts)


@dataclass(frozen=True)
class Line:
    """One series over time; a None value is a gap (the signal had nothing to say in that window)."""

    name: str
    points: Sequence[tuple[datetime, float | None]]


LINE_W = 420
LINE_H = 150
PAD_LEFT = 48
PAD_RIGHT = 12
PAD_TOP = 20
PAD_BOTTOM = 20


PLOT_W = LINE_W - PAD_LEFT - PAD_RIGHT
PLOT_H = LINE_H - PAD_TOP - PAD_BOTTOM


def _stamp(at: datetime) -> str:
    return at.strftime("%m-%d %H:%M:%S")


@dataclass(frozen=True)
class _Frame:
    """A line chart's scales: the points' times across, from zero (or the lowest value) to the highest up."""

    start: datetime | None  # the first and last time of any point; None when there are none
    end: datetime | None
    low: float
    high: float

    @classmethod
    def of(cls, series: Sequence[Line], limit: float | None) -> _Frame:
        finite = [v for s in series for _, v in s.points if v is not None and math.isfinite(v)]
        bounds = [*finite, *([limit] if limit is not None else [])]
        low = min([0.0, *bounds])
        high = max(bounds, default=1.0)
        high = high if high > low else low + 1.0  # the axis' labels are the largest value and zero
        stamps = [at for s in series for at, _ in s.points]
        return cls(min(stamps, default=None), max(stamps, default=None), low, high)

    @property
    def spans_time(self) -> bool:
        return self.start is not None and self.end is not None and self.end.timestamp() > self.start.timestamp()

    def x(self, at: datetime) -> float:
        if self.start is None or self.end is None or not self.spans_time:
            return PAD_LEFT + 0.5 * PLOT_W
        first, last = self.start.timestamp(), self.end.timestamp()
        return PAD_LEFT + (at.timestamp() - first) / (last - first) * PLOT_W

    def y(self, value: float) -> float:
        return PAD_TOP + PLOT_H * (self.high - value) / (self.high - self.low)


def lines(title: str, series: Sequence[Line], *, threshold: float | None = None) -> Markup:
    """Lines over time (x scaled to the points' times), each point a dot with its time and value as its
    tooltip, and the threshold as a dashed horizontal line; the y axis starts at zero unless a value is
    below it. The description names each line's latest value against the threshold."""
    limit = threshold if threshold is not None and math.isfinite(threshold) else None
    frame = _Frame.of(series, limit)
    described = [f"{s.name}: latest {_fmt(value)}" for s in series if (value := _latest(s)) is not None]
    if limit is not None:
        described.append(f"threshold {_fmt(limit)}")
    parts = [
        f'<svg class="chart lines" role="img" viewBox="0 0 {LINE_W} {LINE_H}" width="{LINE_W}" height="{LINE_H}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f"<desc>{escape('; '.join(described) or 'no values yet')}</desc>",
        *_axes(frame),
    ]
    if limit is not None:
        parts.append(_threshold_line(frame, limit))
    for i, s in enumerate(series):
        css = SERIES_CLASSES[i % len(SERIES_CLASSES)]
        if len(series) > 1:
            parts.append(
                f'<rect class="{css}" x="{PAD_LEFT + i * 110}" y="3" width="10" height="10"/>'
                f'<text x="{PAD_LEFT + i * 110 + 14}" y="12" class="legend">{escape(s.name)}</text>'
            )
        parts.extend(_line_marks(frame, s, css))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (built from escaped labels and formatted numbers only)


def _axes(frame: _Frame) -> list[str]:
    """The time axis, labelled with the first and last time, and the value axis' two labels."""
    parts = [
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP + PLOT_H}" x2="{PAD_LEFT + PLOT_W}" '
        f'y2="{PAD_TOP + PLOT_H}"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" text-anchor="end" class="axis">{_fmt(frame.high)}</text>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + PLOT_H}" text-anchor="end" class="axis">{_fmt(frame.low)}</text>',
    ]
    if frame.start is not None and frame.end is not None:
        parts.append(f'<text x="{PAD_LEFT}" y="{LINE_H - 4}" class="axis">{_stamp(frame.start)}</text>')
        if frame.spans_time:
            parts.append(
                f'<text x="{PAD_LEFT + PLOT_W}" y="{LINE_H - 4}" text-anchor="end" class="axis">'
                f"{_stamp(frame.end)}</text>"
            )
    return parts


def _threshold_line(frame: _Frame, limit: float) -> str:
    y = frame.y(limit)
    return (
        f'<line class="threshold" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{PAD_LEFT + PLOT_W}" y2="{y:.1f}">'
        f"<title>threshold {_fmt(limit)}</title></line>"
        f'<text x="{PAD_LEFT + PLOT_W}" y="{y - 3:.1f}" text-anchor="end" class="threshold-label">'
        f"threshold {_fmt(limit)}</text>"
    )


def _line_marks(frame: _Frame, series: Line, css: str) -> list[str]:
    """One series: a polyline per run of values (a gap ends one), then a dot per value with its tooltip."""
    parts: list[str] = []
    run: list[str] = []
    dots: list[str] = []
    for at, value in series.points:
        if value is None or not math.isfinite(value):  # a gap ends the line drawn so far
            parts.extend(_polyline(css, run))
            run = []
            continue
        x, y = frame.x(at), frame.y(value)
        run.append(f"{x:.1f},{y:.1f}")
        dots.append(
            f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
            f"<title>{escape(series.name)} at {_stamp(at)}: {_fmt(value)}</title></circle>"
        )
    return [*parts, *_polyline(css, run), *dots]


def _latest(series: Line) -> float | None:
    values = [v for _, v in series.points if v is not None and math.isfinite(v)]
    return values[-1] if values else None


def _polyline(css: str, points: list[str]) -> list[str]:
    return [f'<polyline class="line {css}" points="{" ".join(points)}"/>'] if len(points) > 1 else []
