"""Inline SVG charts for the static report: bar charts, heat maps and a funnel.

Hand-written SVG rather than a plotting library: the report must open with no network (no CDN, no
script), stay small for a million customers (a chart's size depends on its bins, not on the rows),
and give every chart a stable id, an accessible name and description (its ``<title>`` and
``<desc>``, referenced by ``aria-labelledby``/``aria-describedby``) and marks a test can count
(``class="mark"``). Each mark carries its own
``<title>``, which browsers show as a tooltip, so exact numbers are one hover away without JavaScript.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Sequential scale of the heat maps: from a pale to a deep blue, with white text once cells get dark.
PALE = (239, 243, 255)
DEEP = (8, 69, 148)
DARK_TEXT_FROM = 0.55


@dataclass(frozen=True)
class Series:
    """One named row of values of a bar chart, aligned with its categories."""

    name: str
    values: Sequence[float]
    color: str


def compact(value: float) -> str:
    """A number in at most four characters or so: 0.25, 12, 1.2k, 3.4M (axes and labels stay narrow)."""
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    if size >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Axis ticks on a 1/2/2.5/5 x 10^k step covering ``[min(low, 0), max(high, 0)]``."""
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low <= 0:
        return [0.0, 1.0]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [i * step for i in range(first, last + 1)]


def no_data(panel_id: str, title: str, reason: str) -> str:
    """The panel shown in place of a chart whose table is missing or empty: the reader learns why."""
    return (
        f'<figure class="chart no-data" id="{panel_id}"><figcaption>{escape(title)}</figcaption>'
        f'<p class="no-data-reason">No data: {escape(reason)}</p></figure>'
    )


def _figure(
    chart_id: str, title: str, description: str, width: float, height: float, body: str, legend: str = ""
) -> str:
    svg = (
        f'<svg class="chart-svg" role="img" aria-labelledby="{chart_id}-title" aria-describedby="{chart_id}-desc" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" style="max-width:{width:.0f}px" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>{body}</svg>'
    )
    return f'<figure class="chart" id="{chart_id}"><figcaption>{escape(title)}</figcaption>{svg}{legend}</figure>'


def _legend(series: Sequence[Series]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{s.color}"></span>{escape(s.name)}</li>' for s in series
    )
    return f'<ul class="legend">{items}</ul>'


def _text(x: float, y: float, content: str, css: str = "", **attrs: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{value}"' for name, value in attrs.items())
    klass = f' class="{css}"' if css else ""
    return f'<text x="{x:.1f}" y="{y:.1f}"{klass}{extra}>{escape(content)}</text>'


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str, css: str) -> str:
    return (
        f'<rect class="mark {css}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
        f'fill="{fill}"><title>{escape(tip)}</title></rect>'
    )


def bar_chart(
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    stacked: bool = False,
    y_label: str = "",
    value_format: Callable[[float], str] = compact,
    width: int = 640,
    height: int = 300,
) -> str:
    """Vertical bars per category, one per series side by side (grouped) or on top of each other."""
    rotate = len(categories) > 8 or max((len(c) for c in categories), default=0) > 10
    left, right, top, bottom = 58, 12, 14, (78 if rotate else 40)
    plot_w, plot_h = width - left - right, height - top - bottom
    if stacked:
        totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
        low, high = 0.0, max(totals, default=0.0)
    else:
        flat = [v for s in series for v in s.values]
        low, high = min(flat, default=0.0), max(flat, default=0.0)
    ticks = nice_ticks(low, high)

    def y_of(value: float) -> float:
        return top + plot_h * (ticks[-1] - value) / (ticks[-1] - ticks[0])

    parts = []
    for tick in ticks:
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(_text(left - 6, y + 4, value_format(tick), "tick", text_anchor="end"))
    if y_label:
        parts.append(
            _text(
                14,
                top + plot_h / 2,
                y_label,
                "axis-label",
                transform=f"rotate(-90 14 {top + plot_h / 2:.1f})",
            )
        )
    band = plot_w / max(len(categories), 1)
    group = band * 0.8
    bar_w = group if stacked else group / max(len(series), 1)
    for i, category in enumerate(categories):
        x0 = left + i * band + (band - group) / 2
        base = 0.0
        for j, s in enumerate(series):
            value = s.values[i]
            start, end = (base, base + value) if stacked else (0.0, value)
            base = end if stacked else base
            if value == 0:
                continue
            x = x0 if stacked else x0 + j * bar_w
            y1, y2 = sorted((y_of(start), y_of(end)))
            tip = (
                f"{category} · {s.name}: {value_format(value)}"
                if len(series) > 1
                else f"{category}: {value_format(value)}"
            )
            parts.append(_rect(x, y1, bar_w, max(y2 - y1, 0.5), s.color, tip, "bar"))
        cx, cy = left + (i + 0.5) * band, top + plot_h + 14
        if rotate:
            parts.append(
                _text(cx, cy, category, "tick", text_anchor="end", transform=f"rotate(-35 {cx:.1f} {cy:.1f})")
            )
        else:
            parts.append(_text(cx, cy, category, "tick", text_anchor="middle"))
    parts.append(
        f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{y_of(0):.1f}" y2="{y_of(0):.1f}"/>'
    )
    legend = _legend(series) if len(series) > 1 else ""
    return _figure(chart_id, title, description, width, height, "".join(parts), legend)


def _shade(t: float) -> str:
    r, g, b = (round(p + (d - p) * t) for p, d in zip(PALE, DEEP, strict=True))
    return f"rgb({r},{g},{b})"


def heat_map(
    chart_id: str,
    title: str,
    description: str,
    rows: Sequence[str],
    columns: Sequence[str],
    cells: Sequence[Sequence[float | None]],
    labels: Sequence[Sequence[str]],
    *,
    row_axis: str,
    column_axis: str,
    cell: int = 56,
    domain: tuple[float, float] | None = None,
) -> str:
    """A grid coloured by value (darker = more); ``None`` cells are left blank (e.g. a cohort's future).

    ``domain`` is the value range of the colour scale (default: the cells' own); values beyond it
    get its end colours, so one column that is always 100% does not wash out the others.
    """
    left, top, right, bottom = 86, 14, 12, 44
    width, height = left + cell * len(columns) + right, top + cell * len(rows) + bottom
    known = [v for row in cells for v in row if v is not None]
    low, high = domain or (min(known, default=0.0), max(known, default=0.0))
    parts = []
    for r, row_name in enumerate(rows):
        y = top + r * cell
        parts.append(_text(left - 6, y + cell / 2 + 4, row_name, "tick", text_anchor="end"))
        for c, column_name in enumerate(columns):
            value = cells[r][c]
            if value is None:
                continue
            t = min(max((value - low) / (high - low), 0.0), 1.0) if high > low else 1.0
            x = left + c * cell
            tip = f"{row_axis} {row_name}, {column_axis} {column_name}: {labels[r][c]}"
            parts.append(_rect(x + 1, y + 1, cell - 2, cell - 2, _shade(t), tip, "cell"))
            css = "cell-label dark" if t >= DARK_TEXT_FROM else "cell-label"
            parts.append(_text(x + cell / 2, y + cell / 2 + 4, labels[r][c], css, text_anchor="middle"))
    for c, column_name in enumerate(columns):
        parts.append(
            _text(
                left + (c + 0.5) * cell,
                top + len(rows) * cell + 14,
                column_name,
                "tick",
                text_anchor="middle",
            )
        )
    parts.append(
        _text(left + cell * len(columns) / 2, height - 6, column_axis, "axis-label", text_anchor="middle")
    )
    parts.append(_text(4, top - 2 + 12, row_axis, "axis-label"))
    return _figure(chart_id, title, description, width, height, "".join(parts))


def funnel(chart_id: str, title: str, description: str, stages: Sequence[str], counts: Sequence[int]) -> str:
    """Centred horizontal bars, one per stage in the given order, labelled with count and share."""
    width, step, bar_h, label_w, value_w = 640, 40, 32, 130, 120
    plot_w = width - label_w - value_w
    height = step * len(stages) + 8
    total, largest = sum(counts), max(counts, default=0)
    parts = []
    for i, (stage, count) in enumerate(zip(stages, counts, strict=True)):
        y = 4 + i * step
        share = count / total if total else 0.0
        label = f"{count:,} ({share:.0%})"
        parts.append(_text(label_w - 8, y + bar_h / 2 + 4, stage, "tick", text_anchor="end"))
        if count:
            w = max(plot_w * count / largest, 2.0)
            x = label_w + (plot_w - w) / 2
            parts.append(_rect(x, y, w, bar_h, "#3b6fb6", f"{stage}: {label}", "funnel-step"))
        parts.append(_text(label_w + plot_w + 8, y + bar_h / 2 + 4, label, "tick"))
    return _figure(chart_id, title, description, width, height, "".join(parts))
