"""The chart: throughput against concurrency, one panel per operation, as PNG and SVG."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contenders import BY_KEY
from .report import OP_TITLES, Cell

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INSTALL_HINT = (
    'the chart needs matplotlib: pip install "sessionstore[bench]" '
    '(in a checkout: pip install -e ".[bench]")'
)
TITLE = "sessionstore: throughput vs concurrent callers"

#: A matplotlib line style: a name ("-", "--") or (offset, (on, off, ...)) in points.
LineStyle = str | tuple[float, tuple[float, ...]]

STYLES: dict[str, tuple[str, float, LineStyle]] = {
    # key: (colour, line width in points, line style); the stores stand out by width.
    "store": ("tab:blue", 2.6, "-"),
    "async_store": ("tab:orange", 2.6, "-"),
    "store_public": ("tab:blue", 1.4, ":"),
    "async_store_public": ("tab:orange", 1.4, ":"),
    "store_encrypted": ("tab:blue", 1.4, "-."),
    "async_store_encrypted": ("tab:orange", 1.4, "-."),
    "raw_sync": ("tab:green", 1.4, "-"),
    "raw_async": ("tab:red", 1.4, "-"),
    "raw_sync_tx": ("tab:purple", 1.4, "--"),
    "raw_async_tx": ("tab:brown", 1.4, "--"),
    "pgbench": ("#5a5a5a", 1.4, (0, (6, 3))),
}
_DEFAULT_STYLE: tuple[str, float, LineStyle] = ("black", 1.4, "-")
_GREY = "#787878"
_PANEL_W, _PANEL_H = 6.6, 3.8  # inches per panel
_HEADER, _LEGEND_ROW = 0.75, 0.3  # inches: title block, one legend row


def unavailable() -> str | None:
    """Say why no chart can be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None


def _nice(value: float, *, up: bool) -> float:
    """The nearest 1-2-5 value (…, 1k, 2k, 5k, 10k, …) at or above/below ``value``."""
    exponent = math.floor(math.log10(value))
    candidates = [m * 10.0**e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]
    if up:
        return min(c for c in candidates if c >= value * 0.999)
    return max(c for c in candidates if c <= value * 1.001)


def _bounds(values: Sequence[float]) -> tuple[float, float]:
    """Y limits on 1-2-5 values that enclose every positive value."""
    positive = [v for v in values if v > 0] or [1.0]
    low, high = _nice(min(positive), up=False), _nice(max(positive), up=True)
    return (low, high) if high > low else (low, low * 2)


def _tick_label(value: float, _position: float | None = None) -> str:
    """``20000`` as ``20k``: the panels are read for ratios, not digits."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def draw(
    cells: Sequence[Cell],
    ops: Sequence[str],
    levels: Sequence[int],
    subtitle: str,
    path: str | Path,
) -> tuple[Path, Path]:
    """Draw the chart and save it as a PNG and an SVG."""
    # Imported here, not at the top: the benchmark imports this module whether or not
    # the optional extra is installed.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    ops = [op for op in ops if any(c.op == op for c in cells)] or ["find"]
    columns = 2 if len(ops) > 1 else 1
    panel_rows = math.ceil(len(ops) / columns)
    keys = [key for key in BY_KEY if any(c.contender == key for c in cells)]
    legend_columns = 3 if columns == 2 else 2
    legend_rows = math.ceil(len(keys) / legend_columns)
    width = columns * _PANEL_W
    height = _HEADER + panel_rows * _PANEL_H + legend_rows * _LEGEND_ROW + 0.2

    # svg.fonttype "none" keeps text as <text> (searchable, small) instead of glyph paths;
    # the fixed hash salt and the empty date make reruns on the same data byte-identical.
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "sessionstore", "font.size": 10}
    ):
        # Constrained layout works below the header, which holds the two title lines.
        layout = ConstrainedLayoutEngine(rect=(0, 0, 1, 1 - _HEADER / height))
        figure = Figure(figsize=(width, height), dpi=100, layout=layout)
        FigureCanvasAgg(figure)  # attaches itself: the PNG is rendered by Agg, no display
        figure.text(0.5, 1 - 0.28 / height, TITLE, ha="center", va="center", size=15, weight="bold")
        figure.text(0.5, 1 - 0.58 / height, subtitle, ha="center", va="center", color=_GREY)

        axes = figure.subplots(panel_rows, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index < len(ops):
                op = ops[index]
                _panel(ax, [c for c in cells if c.op == op], op, list(levels), keys)
            else:
                ax.set_visible(False)  # an odd number of panels leaves one empty slot

        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=legend_columns,
            frameon=False,
            handlelength=3.5,  # long enough to show the dashes
        )
        png, svg = Path(path).with_suffix(".png"), Path(path).with_suffix(".svg")
        png.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(png, format="png", metadata={"Software": None})
        figure.savefig(svg, format="svg", metadata={"Date": None, "Title": TITLE})
    return png, svg


def _panel(
    ax: Axes, cells: Sequence[Cell], op: str, levels: list[int], keys: Sequence[str]
) -> None:
    """One operation's panel: a line per contender over the concurrency levels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_title(OP_TITLES.get(op, op), loc="left", size=11)
    ax.set_title("ops/s (log)", loc="right", size=10, color=_GREY)
    ax.set_xlabel("concurrent callers (N)", color=_GREY)
    ax.set_yscale("log")
    ax.set_ylim(*_bounds([c.ops_per_s for c in cells]))
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_tick_label))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xticks(range(len(levels)), [str(n) for n in levels])
    ax.set_xlim(-0.5, len(levels) - 0.5)
    ax.grid(axis="y", color="#dcdcdc", linestyle="--", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    for key in keys:
        color, width, style = STYLES.get(key, _DEFAULT_STYLE)
        points = sorted(
            (levels.index(c.concurrency), c.ops_per_s)
            for c in cells
            if c.contender == key and c.concurrency in levels and c.ops_per_s > 0
        )
        xs, ys = [x for x, _ in points], [y for _, y in points]
        # Every contender gets a legend entry, even one with no point in this panel.
        line: dict[str, Any] = {"color": color, "linewidth": width, "linestyle": style}
        ax.plot(xs, ys, marker="s", markersize=5, label=BY_KEY[key].label, **line)


def subtitle(meta: dict[str, Any]) -> str:
    """The line under the title, from a run's ``meta`` (as written to the JSON)."""
    server, settings = meta["server"], meta["settings"]
    return (
        f"PostgreSQL {str(server['server_version']).split()[0]}, {settings['rows']:,} rows, "
        f"{settings['payload']}-byte data, {meta['cpus']} CPUs, median of {settings['rounds']} "
        f"round(s), {str(meta['date'])[:10]}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw the chart of a recorded run (the JSON that ``python -m benchmarks`` writes)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plot", description="Redraw the chart of a recorded run."
    )
    parser.add_argument("results", type=Path, help="a JSON document from python -m benchmarks")
    parser.add_argument("out", type=Path, help="the chart (written as .png and .svg)")
    args = parser.parse_args(argv)
    missing = unavailable()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    document = json.loads(args.results.read_text())
    meta, settings = document["meta"], document["meta"]["settings"]
    cells = [Cell(**row) for row in document["results"]]
    written = draw(cells, settings["ops"], settings["concurrency"], subtitle(meta), args.out)
    print("plot: " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
