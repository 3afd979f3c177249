"""Small charts drawn on the server as inline SVG: grouped bars (metrics against the champion) and
histograms (a baseline profile's bins). No JavaScript; every label is escaped; each chart has a title
and a text description for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
