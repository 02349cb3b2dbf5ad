"""The PNG chart: throughput against concurrency, one panel per operation.

Drawn with `_png.Canvas` (no plotting library). The y axis is logarithmic, so that
pgbench's ceiling and the Python contenders fit in one panel and equal ratios look
equally far apart; the x axis has one evenly spaced stop per concurrency level.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

from ._png import Canvas, Color
from .contenders import BY_KEY
from .report import OP_TITLES, Cell

STYLES: dict[str, tuple[Color, int, int]] = {
    # key: (colour, line width, dash length; 0 = solid)
    "store": ((31, 119, 180), 4, 0),
    "async_store": ((255, 127, 14), 4, 0),
    "raw_sync": ((44, 160, 44), 2, 0),
    "raw_async": ((214, 39, 40), 2, 0),
    "raw_sync_tx": ((148, 103, 189), 2, 6),
    "raw_async_tx": ((140, 86, 75), 2, 6),
    "pgbench": ((90, 90, 90), 2, 10),
}

_BLACK: Color = (0, 0, 0)
_GREY: Color = (120, 120, 120)
_GRID: Color = (220, 220, 220)
_TEXT = 2  # font scale for labels
_PANEL_W, _PANEL_H = 660, 380
_LEFT, _RIGHT, _TOP, _BOTTOM = 90, 30, 50, 60  # margins inside a panel


def _ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks spanning [low, high]."""
    ticks = []
    exponent = math.floor(math.log10(low))
    while True:
        for m in (1, 2, 5):
            value = m * 10.0**exponent
            if value >= low * 0.999:
                ticks.append(value)
            if value >= high * 0.999:
                return ticks
        exponent += 1


def _tick_label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _bounds(values: Sequence[float]) -> tuple[float, float]:
    positive = [v for v in values if v > 0] or [1.0]
    low, high = min(positive), max(positive)
    low_tick = 10.0 ** math.floor(math.log10(low))
    for m in (5, 2, 1):
        if m * 10.0 ** math.floor(math.log10(low)) <= low:
            low_tick = m * 10.0 ** math.floor(math.log10(low))
            break
    high_tick = _ticks(high, high)[-1]
    if high_tick <= low_tick:
        high_tick = low_tick * 2
    return low_tick, high_tick


def draw(
    cells: Sequence[Cell],
    ops: Sequence[str],
    concurrency: Sequence[int],
    subtitle: str,
    path: str | Path,
) -> None:
    """Draw the chart and save it as a PNG.

    Args:
        cells: The results.
        ops: The operations, one panel each (in this order).
        concurrency: The x axis.
        subtitle: A line under the title (server, table size, rounds).
        path: Where to save the PNG.
    """
    ops = [op for op in ops if any(c.op == op for c in cells)] or ["find"]
    columns = 2 if len(ops) > 1 else 1
    panel_rows = math.ceil(len(ops) / columns)
    keys = [key for key in BY_KEY if any(c.contender == key for c in cells)]
    legend_columns = 3 if columns == 2 else 2
    legend_rows = math.ceil(len(keys) / legend_columns)
    header = 80
    width = columns * _PANEL_W + 20
    height = header + panel_rows * _PANEL_H + 30 + legend_rows * 30 + 20
    canvas = Canvas(width, height)
    canvas.text(
        width // 2, 12, "sessionstore: throughput vs concurrent callers", _BLACK, 3, "center"
    )
    canvas.text(width // 2, 48, subtitle, _GREY, _TEXT, "center")

    for index, op in enumerate(ops):
        x0 = 10 + (index % columns) * _PANEL_W
        y0 = header + (index // columns) * _PANEL_H
        _panel(canvas, [c for c in cells if c.op == op], op, concurrency, keys, x0, y0)

    ly = header + panel_rows * _PANEL_H + 20
    column_width = (width - 40) // legend_columns
    for i, key in enumerate(keys):
        color, line_width, dash = STYLES.get(key, (_BLACK, 2, 0))
        lx = 20 + (i % legend_columns) * column_width
        yy = ly + (i // legend_columns) * 30 + 9
        canvas.line(lx, yy, lx + 40, yy, color, line_width, dash)
        canvas.rect(lx + 16, yy - 4, lx + 24, yy + 4, color)
        canvas.text(lx + 52, yy - 9, BY_KEY[key].label, _BLACK, _TEXT)
    canvas.save(path)


def _panel(
    canvas: Canvas,
    cells: Sequence[Cell],
    op: str,
    concurrency: Sequence[int],
    keys: Sequence[str],
    x0: int,
    y0: int,
) -> None:
    left, right = x0 + _LEFT, x0 + _PANEL_W - _RIGHT
    top, bottom = y0 + _TOP, y0 + _PANEL_H - _BOTTOM
    canvas.text(left, y0 + 14, OP_TITLES.get(op, op), _BLACK, _TEXT)
    canvas.text(right, y0 + 14, "ops/s (log)", _GREY, _TEXT, "right")
    low, high = _bounds([c.ops_per_s for c in cells])
    span = math.log10(high) - math.log10(low)

    def y_of(value: float) -> int:
        value = max(value, low)
        return round(bottom - (math.log10(value) - math.log10(low)) / span * (bottom - top))

    levels = list(concurrency)
    step = (right - left) / max(1, len(levels))

    def x_of(n: int) -> int:
        return round(left + step * (levels.index(n) + 0.5))

    for tick in _ticks(low, high):
        y = y_of(tick)
        canvas.line(left, y, right, y, _GRID, 1, 4)
        canvas.text(left - 8, y - 9, _tick_label(tick), _GREY, _TEXT, "right")
    canvas.line(left, top, left, bottom, _GREY)
    canvas.line(left, bottom, right, bottom, _GREY)
    for n in levels:
        x = x_of(n)
        canvas.line(x, bottom, x, bottom + 5, _GREY)
        canvas.text(x, bottom + 10, str(n), _BLACK, _TEXT, "center")
    canvas.text((left + right) // 2, bottom + 34, "concurrent callers (N)", _GREY, _TEXT, "center")

    for key in keys:
        color, line_width, dash = STYLES.get(key, (_BLACK, 2, 0))
        points = sorted(
            (levels.index(c.concurrency), x_of(c.concurrency), y_of(c.ops_per_s))
            for c in cells
            if c.contender == key and c.concurrency in levels and c.ops_per_s > 0
        )
        for (_, xa, ya), (_, xb, yb) in itertools.pairwise(points):
            canvas.line(xa, ya, xb, yb, color, line_width, dash)
        for _, x, y in points:
            canvas.rect(x - 4, y - 4, x + 4, y + 4, color)
