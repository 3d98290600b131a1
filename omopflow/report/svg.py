"""Inline SVG charts, written as text: the report must open with no network and no script.

Three shapes cover the report: horizontal bars (frequencies), grouped columns (persons by
birth decade and gender) and box plots (records per person). Counts below the small-cell
threshold are drawn as an empty dashed bar labelled "<N", never at their true length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from omopflow.report.cells import is_small, shown

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")
FONT = 'font-family="system-ui, sans-serif" font-size="12"'
LABEL_WIDTH = 260
BAR_HEIGHT = 18
GAP = 6


@dataclass(frozen=True)
class Box:
    """Distribution of one group: percentiles 10, 25, 50, 75, 90."""

    label: str
    p10: float
    p25: float
    p50: float
    p75: float
    p90: float


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round axis ticks from 0 to at least `maximum`."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(math.ceil(maximum / step) + 1)]


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" {FONT}>'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _axis(ticks: list[float], x0: int, scale: float, y_top: int, y_bottom: int) -> list[str]:
    parts = []
    for tick in ticks:
        x = x0 + tick * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{y_top}" x2="{x:.1f}" y2="{y_bottom}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{y_bottom + 14}" text-anchor="middle" fill="#555">'
            f"{_tick_label(tick)}</text>"
        )
    return parts


def _small_bar(x: float, y: float, width: float, height: float, color: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 2):.1f}" height="{height:.1f}" '
        f'fill="none" stroke="{color}" stroke-dasharray="3 2"/>'
    )


def bar_chart(bars: Sequence[tuple[str, int]], title: str, min_cell: int, width: int = 720) -> str:
    """Horizontal bars, one per (label, count), in the given order."""
    if not bars:
        return _empty(title)
    plot = width - LABEL_WIDTH - 70
    maximum = max(max(count for _, count in bars), min_cell)
    ticks = nice_ticks(maximum)
    scale = plot / ticks[-1]
    height = len(bars) * (BAR_HEIGHT + GAP) + 30
    body = _axis(ticks, LABEL_WIDTH, scale, 0, height - 24)
    for i, (label, count) in enumerate(bars):
        y = i * (BAR_HEIGHT + GAP)
        body.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end">'
            f"{escape(_clip(label))}<title>{escape(label)}</title></text>"
        )
        if is_small(count, min_cell):
            body.append(_small_bar(LABEL_WIDTH, y, min_cell * scale, BAR_HEIGHT, PALETTE[0]))
            length = min_cell * scale
        else:
            length = count * scale
            body.append(
                f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" '
                f'height="{BAR_HEIGHT}" fill="{PALETTE[0]}"/>'
            )
        body.append(
            f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{y + 13}">'
            f"{escape(shown(count, min_cell))}</text>"
        )
    return _svg(width, height, title, body)


def column_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[int]],
    title: str,
    min_cell: int,
    width: int = 720,
) -> str:
    """Grouped vertical columns: one group per category, one column per series."""
    if not categories or not series:
        return _empty(title)
    height, top, left, bottom = 260, 24, 50, 40
    plot_h = height - top - bottom
    maximum = max(max(max(values, default=0) for values in series.values()), min_cell)
    ticks = nice_ticks(maximum)
    scale = plot_h / ticks[-1]
    group_w = (width - left - 10) / len(categories)
    column_w = max(2.0, (group_w - 6) / len(series))
    body = _legend(list(series), left, 4)
    for tick in ticks:
        y = top + plot_h - tick * scale
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{_tick_label(tick)}</text>"
        )
    for c, category in enumerate(categories):
        x_group = left + c * group_w + 3
        body.append(
            f'<text x="{x_group + group_w / 2 - 3:.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle">{escape(category)}</text>'
        )
        for s, (name, values) in enumerate(series.items()):
            count = values[c]
            x = x_group + s * column_w
            color = PALETTE[s % len(PALETTE)]
            value = escape(shown(count, min_cell))
            tip = f"<title>{escape(name)} {escape(category)}: {value}</title>"
            if is_small(count, min_cell):
                h = min_cell * scale
                body.append(
                    f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{column_w - 1:.1f}" '
                    f'height="{h:.1f}" fill="none" stroke="{color}" stroke-dasharray="3 2">'
                    f"{tip}</rect>"
                )
            elif count:
                h = count * scale
                body.append(
                    f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{column_w - 1:.1f}" '
                    f'height="{h:.1f}" fill="{color}">{tip}</rect>'
                )
    return _svg(width, height, title, body)


def box_chart(boxes: Sequence[Box], title: str, width: int = 720) -> str:
    """Horizontal box plots on one axis: whiskers p10-p90, box p25-p75, line at the median."""
    if not boxes:
        return _empty(title)
    plot = width - LABEL_WIDTH - 30
    ticks = nice_ticks(max(box.p90 for box in boxes))
    scale = plot / ticks[-1]
    height = len(boxes) * (BAR_HEIGHT + GAP) + 30
    body = _axis(ticks, LABEL_WIDTH, scale, 0, height - 24)
    for i, box in enumerate(boxes):
        y = i * (BAR_HEIGHT + GAP)
        mid = y + BAR_HEIGHT / 2

        def x(value: float) -> float:
            return LABEL_WIDTH + value * scale

        body.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end">'
            f"{escape(_clip(box.label))}</text>"
            f'<line x1="{x(box.p10):.1f}" y1="{mid}" x2="{x(box.p90):.1f}" y2="{mid}" '
            'stroke="#333"/>'
            f'<rect x="{x(box.p25):.1f}" y="{y + 2}" width="{x(box.p75) - x(box.p25):.1f}" '
            f'height="{BAR_HEIGHT - 4}" fill="{PALETTE[2]}" stroke="#333">'
            f"<title>{escape(box.label)}: p10 {box.p10:g}, p25 {box.p25:g}, median "
            f"{box.p50:g}, p75 {box.p75:g}, p90 {box.p90:g}</title></rect>"
            f'<line x1="{x(box.p50):.1f}" y1="{y + 2}" x2="{x(box.p50):.1f}" '
            f'y2="{y + BAR_HEIGHT - 2}" stroke="#000" stroke-width="2"/>'
        )
    return _svg(width, height, title, body)


def _legend(names: list[str], x: int, y: int) -> list[str]:
    parts = []
    for i, name in enumerate(names):
        left = x + i * 110
        parts.append(
            f'<rect x="{left}" y="{y}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{left + 14}" y="{y + 9}">{escape(_clip(name, 14))}</text>'
        )
    return parts


def _empty(title: str) -> str:
    return _svg(300, 30, title, ['<text x="0" y="18" fill="#777">no data</text>'])


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class FlowStep:
    """One box of the ledger flow, with what left the flow at this step (if anything)."""

    label: str
    count: int
    lost_label: str = ""
    lost: int | None = None


def flow_chart(steps: Sequence[FlowStep], title: str, width: int = 900) -> str:
    """Boxes left to right joined by arrows; losses hang below the step that lost them."""
    if not steps:
        return _empty(title)
    box_w = min(150, (width - 20) // len(steps) - 30)
    pitch = box_w + 30
    body = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
    ]
    for i, step in enumerate(steps):
        x = 10 + i * pitch
        body.append(_flow_box(x, 10, box_w, step.label, step.count, PALETTE[0]))
        if i:
            body.append(
                f'<line x1="{x - 28}" y1="40" x2="{x - 2}" y2="40" stroke="#555" '
                'marker-end="url(#arrow)"/>'
            )
        if step.lost is not None:
            body.append(
                f'<line x1="{x + box_w / 2}" y1="70" x2="{x + box_w / 2}" y2="98" '
                'stroke="#c44e52" marker-end="url(#arrow)"/>'
            )
            body.append(_flow_box(x, 100, box_w, step.lost_label, step.lost, PALETTE[3]))
    return _svg(width, 170, title, body)


def _flow_box(x: float, y: float, width: int, label: str, count: int, color: str) -> str:
    return (
        f'<rect x="{x}" y="{y}" width="{width}" height="60" rx="6" fill="#fff" '
        f'stroke="{color}" stroke-width="2"/>'
        f'<text x="{x + width / 2}" y="{y + 24}" text-anchor="middle">'
        f"{escape(_clip(label, 22))}</text>"
        f'<text x="{x + width / 2}" y="{y + 44}" text-anchor="middle" font-weight="bold">'
        f"{count:,}</text>"
    )
