"""Summaries of the samples: medians, percentiles, ratios, the issue's targets, the table.

For each (operation, contender, concurrency): throughput is the median of the rounds'
ops/s; p50 and p99 are taken over the latencies of all rounds together. Each contender
is compared with the raw psycopg autocommit contender *of its own kind* (threads with
threads, asyncio with asyncio) and with pgbench at the same concurrency.
"""

from __future__ import annotations

import dataclasses
import statistics
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from .contenders import BY_KEY
from .measure import Sample, percentile

OP_TITLES = {
    "find": "find",
    "commit": "commit (upsert)",
    "mix": "mix (90% find, 10% commit)",
    "delete": "delete",
}


@dataclasses.dataclass
class Cell:
    """The summary of one (operation, contender, concurrency).

    Attributes:
        op: The operation.
        contender: The contender's key.
        label: The contender's label.
        concurrency: Concurrent callers.
        ops_per_s: Median throughput over the rounds.
        rounds_ops_per_s: Each round's throughput.
        p50_ms: Median latency, milliseconds.
        p99_ms: 99th percentile latency, milliseconds.
        mean_ms: Mean latency, milliseconds.
        ops: Operations counted, all rounds together.
        exhausted: A round ran out of delete-pool rows.
        vs_raw: Throughput over the raw autocommit contender of the same kind.
        vs_pgbench: Throughput over pgbench's.
    """

    op: str
    contender: str
    label: str
    concurrency: int
    ops_per_s: float
    rounds_ops_per_s: list[float]
    p50_ms: float
    p99_ms: float
    mean_ms: float
    ops: int
    exhausted: bool
    vs_raw: float | None = None
    vs_pgbench: float | None = None


@dataclasses.dataclass
class Target:
    """One of the issue's targets, checked against this run."""

    description: str
    met: bool
    detail: str


def summarize(samples: Mapping[tuple[str, str, int], Sequence[Sample]]) -> list[Cell]:
    """Turn the samples into cells, with ratios filled in."""
    cells: dict[tuple[str, str, int], Cell] = {}
    for (op, key, n), runs in samples.items():
        latencies: array[float] = array("d")
        for sample in runs:
            latencies.extend(sample.latencies)
        ordered = sorted(latencies)
        per_round = [sample.ops_per_s for sample in runs]
        cells[(op, key, n)] = Cell(
            op=op,
            contender=key,
            label=BY_KEY[key].label,
            concurrency=n,
            ops_per_s=statistics.median(per_round),
            rounds_ops_per_s=per_round,
            p50_ms=percentile(ordered, 0.50) * 1000,
            p99_ms=percentile(ordered, 0.99) * 1000,
            mean_ms=statistics.fmean(ordered) * 1000 if ordered else float("nan"),
            ops=len(ordered),
            exhausted=any(sample.exhausted for sample in runs),
        )
    for (op, key, n), cell in cells.items():
        baseline = BY_KEY[key].baseline
        raw = cells.get((op, baseline, n)) if baseline else None
        if raw is not None and raw.ops_per_s > 0:
            cell.vs_raw = cell.ops_per_s / raw.ops_per_s
        pgbench = cells.get((op, "pgbench", n))
        if pgbench is not None and pgbench.ops_per_s > 0:
            cell.vs_pgbench = cell.ops_per_s / pgbench.ops_per_s
    return list(cells.values())


def check_targets(cells: Sequence[Cell]) -> list[Target]:
    """Check the targets of the issue that this run measured."""
    by = {(c.op, c.contender, c.concurrency): c for c in cells}
    stores = [key for key in ("store", "async_store") if any(c.contender == key for c in cells)]
    levels = sorted({c.concurrency for c in cells})
    targets: list[Target] = []
    for key in stores:
        label = BY_KEY[key].label.split(" ")[0]
        for op in ("find", "commit"):
            ratios = [(n, by[(op, key, n)].vs_raw) for n in levels if (op, key, n) in by]
            known = [(n, r) for n, r in ratios if r is not None]
            if known:
                worst_n, worst = min(known, key=lambda item: item[1])
                targets.append(
                    Target(
                        f"{label} {op} >= 1.0x raw psycopg at every concurrency",
                        worst >= 1.0,
                        f"lowest {worst:.2f}x at N={worst_n}",
                    )
                )
        for n in (16, 64):
            cell = by.get(("find", key, n))
            if cell is not None and cell.vs_raw is not None:
                targets.append(
                    Target(
                        f"{label} find >= 1.3x raw psycopg at N={n}",
                        cell.vs_raw >= 1.3,
                        f"{cell.vs_raw:.2f}x",
                    )
                )
        if 64 in levels:
            for op in ("find", "commit"):
                own = [by[(op, key, n)] for n in levels if (op, key, n) in by]
                top = by.get((op, key, 64))
                if top is not None and own:
                    best = max(own, key=lambda c: c.ops_per_s)
                    share = top.ops_per_s / best.ops_per_s if best.ops_per_s else 0.0
                    targets.append(
                        Target(
                            f"{label} {op} at N=64 >= 90% of its best",
                            share >= 0.9,
                            f"{share:.0%} of {best.ops_per_s:,.0f}/s (N={best.concurrency})",
                        )
                    )
    return targets


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # NaN: no latencies


def format_table(cells: Sequence[Cell], ops: Sequence[str], rounds: int) -> str:
    """Render the results as aligned text: one block per operation, one row per cell."""
    order = {key: i for i, key in enumerate(BY_KEY)}
    header = ("N", "contender", "ops/s", "p50 ms", "p99 ms", "x raw", "x pgbench")
    lines = [
        f"ops/s: median of {rounds} round{'s' if rounds != 1 else ''}; p50/p99 over all rounds; "
        "x raw: ratio to raw psycopg autocommit of the same kind (threads/asyncio); "
        "x pgbench: ratio to pgbench at the same N"
    ]
    for op in ops:
        rows = sorted(
            (c for c in cells if c.op == op),
            key=lambda c: (c.concurrency, order.get(c.contender, 99)),
        )
        if not rows:
            continue
        table: list[tuple[str, ...]] = [header]
        previous_n = None
        for c in rows:
            note = " *" if c.exhausted else ""
            table.append(
                (
                    str(c.concurrency) if c.concurrency != previous_n else "",
                    c.label + note,
                    f"{c.ops_per_s:,.0f}",
                    _ms(c.p50_ms),
                    _ms(c.p99_ms),
                    _ratio(c.vs_raw),
                    _ratio(c.vs_pgbench),
                )
            )
            previous_n = c.concurrency
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines += ["", OP_TITLES.get(op, op)]
        for i, row in enumerate(table):
            cells_text = [
                row[j].ljust(widths[j]) if j in (0, 1) else row[j].rjust(widths[j])
                for j in range(len(row))
            ]
            lines.append("  " + "  ".join(cells_text).rstrip())
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
    if any(c.exhausted for c in cells):
        lines += ["", "* the delete pool ran out in a round (deletes outran the pool's sizing)"]
    return "\n".join(lines)


def format_targets(targets: Sequence[Target]) -> str:
    """Render the targets as lines of text."""
    if not targets:
        return ""
    lines = ["targets (issue 4):"]
    for t in targets:
        lines.append(f"  [{'met ' if t.met else 'MISS'}] {t.description}: {t.detail}")
    return "\n".join(lines)


def cells_json(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The cells as JSON-ready dicts."""
    return [dataclasses.asdict(c) for c in cells]


def targets_json(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """The targets as JSON-ready dicts."""
    return [dataclasses.asdict(t) for t in targets]
