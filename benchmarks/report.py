"""Summaries of the samples: medians, percentiles, ratios, the table, the comparison."""

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
    """The summary of one (operation, contender, concurrency)."""

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
    network: str = "loopback"
    rounds_noisy: int = 0
    missing: bool = False
    steal_max: float | None = None
    steal_median: float | None = None
    others_median: float | None = None
    client_us_per_op: float | None = None
    server_us_per_op: float | None = None
    proxy_us_per_op: float | None = None


#: The default of ``--max-steal``: rounds in which the host stole more than this share
#: of the CPU are left out. Beyond a tenth, a CPU-bound round on 2 cores loses a tenth
#: of its throughput to the host, as large as the differences between contenders.
MAX_STEAL = 0.10


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _per_op(sample: Sample, seconds: float | None) -> float | None:
    if seconds is None or sample.cpu_ops <= 0:
        return None
    return seconds / sample.cpu_ops * 1e6


def summarize(
    samples: Mapping[tuple[str, str, str, int], Sequence[Sample]], max_steal: float = MAX_STEAL
) -> list[Cell]:
    """Turn the samples into cells, with noisy rounds left out and ratios filled in."""
    cells: dict[tuple[str, str, str, int], Cell] = {}
    for (network, op, key, n), runs in samples.items():
        kept = [r for r in runs if r.usage is None or not r.usage.noise.noisy(max_steal)]
        latencies: array[float] = array("d")
        for sample in kept:
            latencies.extend(sample.latencies)
        ordered = sorted(latencies)
        per_round = [sample.ops_per_s for sample in runs]
        steals = [r.usage.noise.steal for r in runs if r.usage is not None]
        usages = [(r, r.usage) for r in kept if r.usage is not None]
        cells[(network, op, key, n)] = Cell(
            op=op,
            contender=key,
            label=BY_KEY[key].label,
            concurrency=n,
            ops_per_s=statistics.median(r.ops_per_s for r in kept) if kept else float("nan"),
            rounds_ops_per_s=per_round,
            p50_ms=percentile(ordered, 0.50) * 1000,
            p99_ms=percentile(ordered, 0.99) * 1000,
            mean_ms=statistics.fmean(ordered) * 1000 if ordered else float("nan"),
            ops=len(ordered),
            exhausted=any(sample.exhausted for sample in runs),
            network=network,
            rounds_noisy=len(runs) - len(kept),
            missing=not kept,
            steal_max=max((v for v in steals if v is not None), default=None),
            steal_median=_median(steals),
            others_median=_median([u.noise.others for _, u in usages]),
            client_us_per_op=_median([_per_op(r, u.client) for r, u in usages]),
            server_us_per_op=_median([_per_op(r, u.server) for r, u in usages]),
            proxy_us_per_op=_median([_per_op(r, u.helpers.get("proxy")) for r, u in usages]),
        )
    for (network, op, key, n), cell in cells.items():
        if cell.missing:
            continue
        baseline = BY_KEY[key].baseline
        raw = cells.get((network, op, baseline, n)) if baseline else None
        if raw is not None and raw.ops_per_s > 0:
            cell.vs_raw = cell.ops_per_s / raw.ops_per_s
        pgbench = cells.get((network, op, "pgbench", n))
        if pgbench is not None and pgbench.ops_per_s > 0:
            cell.vs_pgbench = cell.ops_per_s / pgbench.ops_per_s
    return list(cells.values())


def run_noise(cells: Sequence[Cell]) -> str:
    """One line on the run's noise: steal (worst and median of cells) and other load."""

    def pct(value: float | None) -> str:
        return "?" if value is None else f"{100 * value:.1f}%"

    steal_max = max((c.steal_max for c in cells if c.steal_max is not None), default=None)
    steal_median = _median([c.steal_median for c in cells])
    others = _median([c.others_median for c in cells])
    left_out = sum(c.rounds_noisy for c in cells)
    missing = sum(1 for c in cells if c.missing)
    proxy = {c.network: c.proxy_us_per_op for c in cells if c.proxy_us_per_op is not None}
    text = (
        f"noise: CPU stolen by the host {pct(steal_median)} median, {pct(steal_max)} worst "
        f"round; other processes {pct(others)} of the machine (median); "
        f"{left_out} noisy sample(s) left out, {missing} cell(s) missing"
    )
    for network in sorted(proxy):
        figures = [c.proxy_us_per_op for c in cells if c.network == network]
        text += f"; proxy CPU ({network}) {_median(figures) or 0:.0f} us/op median"
    return text


STORES = tuple(key for key, c in BY_KEY.items() if c.store)


def delay_of(network: str) -> float | None:
    """The one-way delay in ms of a network label (``"0.5 ms"``), None for loopback."""
    return float(network.split()[0]) if network.endswith(" ms") else None


def round_trip_ceiling(callers: int, delay_ms: float) -> float:
    """The most ops/s `callers` closed-loop callers can make when a round trip takes 2 x delay."""
    return callers / (2 * delay_ms / 1000)


def compare(cells: Sequence[Cell]) -> list[str]:
    """How each store compares, per network and operation, at every concurrency."""
    lines: list[str] = []
    ns = sorted({c.concurrency for c in cells})
    by = {(c.network, c.op, c.contender, c.concurrency): c for c in cells}
    networks = sorted({c.network for c in cells}, key=lambda n: (delay_of(n) or 0.0, n))
    ops = list(dict.fromkeys(c.op for c in cells))
    for network in networks:
        delay = delay_of(network)
        for op in ops:
            for key in STORES:
                row = [by.get((network, op, key, n)) for n in ns]
                if not any(row):
                    continue
                parts = [
                    "x raw " + " / ".join(_ratio(c.vs_raw if c else None) for c in row),
                    "x pgbench " + " / ".join(_ratio(c.vs_pgbench if c else None) for c in row),
                ]
                if delay is not None:
                    parts.append(
                        "of the round-trip ceiling "
                        + " / ".join(
                            "-"
                            if c is None or c.missing
                            else _pct(c.ops_per_s / round_trip_ceiling(n, delay))
                            for c, n in zip(row, ns, strict=True)
                        )
                    )
                where = "" if network == "loopback" else f" [{network} each way]"
                lines.append(f"  {BY_KEY[key].label} {op}{where}: " + "; ".join(parts))
    if not lines:
        return []
    head = "how the stores compare, at N = " + " / ".join(map(str, ns))
    return [
        head + " (x raw: raw psycopg of the same kind; x pgbench: PostgreSQL's C client):",
        *lines,
    ]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # NaN: no latencies


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_table(cells: Sequence[Cell], ops: Sequence[str], rounds: int) -> str:
    """Render the results as aligned text: a block per network and operation, a row per cell."""
    order = {key: i for i, key in enumerate(BY_KEY)}
    header = (
        "N",
        "contender",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "x raw",
        "x pgbench",
        "client µs/op",
        "server µs/op",
        "steal max",
        "others",
    )
    lines = [
        f"ops/s: median of {rounds} round{'s' if rounds != 1 else ''} (noisy rounds left "
        "out); p50/p99 over the kept rounds; x raw: ratio to raw psycopg autocommit of the "
        "same kind (threads/asyncio); x pgbench: ratio to pgbench at the same N; "
        "client/server µs/op: CPU time per operation of the client process (pgbench's own "
        "for pgbench) and of the PostgreSQL server's processes; steal max: most CPU the "
        "host stole in a round; others: other processes' share of the machine's CPU"
    ]
    networks = sorted({c.network for c in cells}, key=lambda n: (delay_of(n) or 0.0, n))
    for network in networks:
        for op in ops:
            rows = sorted(
                (c for c in cells if c.op == op and c.network == network),
                key=lambda c: (c.concurrency, order.get(c.contender, 99)),
            )
            if not rows:
                continue
            table: list[tuple[str, ...]] = [header]
            previous_n = None
            for c in rows:
                note = " *" if c.exhausted else ""
                note += f" ({c.rounds_noisy} noisy left out)" if c.rounds_noisy else ""
                table.append(
                    (
                        str(c.concurrency) if c.concurrency != previous_n else "",
                        c.label + note,
                        "missing" if c.missing else f"{c.ops_per_s:,.0f}",
                        _ms(c.p50_ms),
                        _ms(c.p99_ms),
                        _ratio(c.vs_raw),
                        _ratio(c.vs_pgbench),
                        _us(c.client_us_per_op),
                        _us(c.server_us_per_op),
                        _pct(c.steal_max),
                        _pct(c.others_median),
                    )
                )
                previous_n = c.concurrency
            widths = [max(len(row[i]) for row in table) for i in range(len(header))]
            title = OP_TITLES.get(op, op)
            if len(networks) > 1 or network != "loopback":
                title += f" [{network}" + (" each way]" if network != "loopback" else "]")
            lines += ["", title]
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
    if any(c.missing for c in cells):
        lines += ["", "missing: every round of the cell was noisy (see --max-steal)"]
    return "\n".join(lines)


def cells_json(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The cells as JSON-ready dicts."""
    return [dataclasses.asdict(c) for c in cells]
