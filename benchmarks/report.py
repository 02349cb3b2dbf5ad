"""Summaries of the samples: medians, percentiles, ratios, the noise, the tables (also
``python -m benchmarks.web``'s), the comparison."""

from __future__ import annotations

import dataclasses
import statistics
from array import array
from collections.abc import Iterable, Mapping, Sequence

from .contenders import BY_KEY
from .measure import Sample, percentile

OP_TITLES = {"commit": "commit (upsert)", "mix": "mix (90% find, 10% commit)"}


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
    exhausted: bool = False
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


def median(values: Iterable[float | None]) -> float | None:
    """The median of the known values, or None."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def per_op(sample: Sample, seconds: float | None) -> float | None:
    """`seconds` of CPU per operation counted for CPU, in µs."""
    if seconds is None or sample.cpu_ops <= 0:
        return None
    return seconds / sample.cpu_ops * 1e6


def rates(
    runs: Sequence[Sample], kept: Sequence[Sample]
) -> tuple[float, list[float], float, float, float, int]:
    """A cell's (rate, per-round rates, p50 ms, p99 ms, mean ms, count): the rate the median
    of the `kept` rounds', the latencies over their operations."""
    latencies: array[float] = array("d")
    for sample in kept:
        latencies.extend(sample.latencies)
    ordered = sorted(latencies)
    return (
        statistics.median(r.ops_per_s for r in kept) if kept else float("nan"),
        [r.ops_per_s for r in runs],
        percentile(ordered, 0.50) * 1000,
        percentile(ordered, 0.99) * 1000,
        statistics.fmean(ordered) * 1000 if ordered else float("nan"),
        len(ordered),
    )


def summarize(
    samples: Mapping[tuple[str, str, str, int], Sequence[Sample]], max_steal: float = MAX_STEAL
) -> list[Cell]:
    """Turn the samples into cells, with noisy rounds left out and ratios filled in."""
    cells: dict[tuple[str, str, str, int], Cell] = {}
    for (network, op, key, n), runs in samples.items():
        kept = [r for r in runs if r.usage is None or not r.usage.noise.noisy(max_steal)]
        steals = [r.usage.noise.steal for r in runs if r.usage is not None]
        usages = [(r, r.usage) for r in kept if r.usage is not None]
        cells[(network, op, key, n)] = Cell(
            op,
            key,
            BY_KEY[key].label,
            n,
            *rates(runs, kept),
            exhausted=any(sample.exhausted for sample in runs),
            network=network,
            rounds_noisy=len(runs) - len(kept),
            missing=not kept,
            steal_max=max((v for v in steals if v is not None), default=None),
            steal_median=median(steals),
            others_median=median(u.noise.others for _, u in usages),
            client_us_per_op=median(per_op(r, u.client) for r, u in usages),
            server_us_per_op=median(per_op(r, u.server) for r, u in usages),
            proxy_us_per_op=median(per_op(r, u.helpers.get("proxy")) for r, u in usages),
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


def noise_line(
    steal: Sequence[float | None],
    steal_worst: Sequence[float | None],
    others: Sequence[float | None],
    left_out: int,
    missing: int,
    others_most: str = "",
) -> str:
    """One line on a run's noise: the host's steal (median and worst round), the other
    processes' share of the machine (median, then `others_most`), the rounds left out,
    the cells missing."""
    worst = max((v for v in steal_worst if v is not None), default=None)
    return (
        f"noise: CPU stolen by the host {pct(median(steal), 1)} median, {pct(worst, 1)} worst "
        f"round; other processes {pct(median(others), 1)} of the machine (median){others_most}; "
        f"{left_out} noisy round(s) left out, {missing} cell(s) missing"
    )


def run_noise(cells: Sequence[Cell]) -> str:
    """The noise line of a run, with the proxy's CPU per operation of each network."""
    text = noise_line(
        [c.steal_median for c in cells],
        [c.steal_max for c in cells],
        [c.others_median for c in cells],
        sum(c.rounds_noisy for c in cells),
        sum(1 for c in cells if c.missing),
    )
    for network in sorted({c.network for c in cells if c.proxy_us_per_op is not None}):
        figures = median(c.proxy_us_per_op for c in cells if c.network == network)
        text += f"; proxy CPU ({network}) {figures or 0:.0f} us/op median"
    return text


STORES = tuple(key for key, c in BY_KEY.items() if c.store)


def delay_of(network: str) -> float | None:
    """The one-way delay in ms of a network label (``"0.5 ms"``), None for loopback."""
    return float(network.split()[0]) if network.endswith(" ms") else None


def _networks(cells: Sequence[Cell]) -> list[str]:
    """The cells' networks, loopback first, then by delay."""
    return sorted({c.network for c in cells}, key=lambda n: (delay_of(n) or 0.0, n))


def round_trip_ceiling(callers: int, delay_ms: float) -> float:
    """The most ops/s `callers` closed-loop callers can make when a round trip takes 2 x delay."""
    return callers / (2 * delay_ms / 1000)


def compare(cells: Sequence[Cell]) -> list[str]:
    """How each store compares, per network and operation, at every concurrency."""
    lines: list[str] = []
    ns = sorted({c.concurrency for c in cells})
    by = {(c.network, c.op, c.contender, c.concurrency): c for c in cells}
    networks = _networks(cells)
    ops = list(dict.fromkeys(c.op for c in cells))
    for network in networks:
        delay = delay_of(network)
        for op in ops:
            for key in STORES:
                row = [by.get((network, op, key, n)) for n in ns]
                if not any(row):
                    continue
                parts = [
                    "x raw " + " / ".join(ratio(c.vs_raw if c else None) for c in row),
                    "x pgbench " + " / ".join(ratio(c.vs_pgbench if c else None) for c in row),
                ]
                if delay is not None:
                    shares = [
                        None
                        if c is None or c.missing
                        else c.ops_per_s / round_trip_ceiling(n, delay)
                        for c, n in zip(row, ns, strict=True)
                    ]
                    parts.append("of the round-trip ceiling " + " / ".join(map(pct, shares)))
                where = "" if network == "loopback" else f" [{network} each way]"
                lines.append(f"  {BY_KEY[key].label} {op}{where}: " + "; ".join(parts))
    if not lines:
        return []
    head = "how the stores compare, at N = " + " / ".join(map(str, ns))
    return [
        head + " (x raw: raw psycopg of the same kind; x pgbench: PostgreSQL's C client):",
        *lines,
    ]


def ratio(value: float | None) -> str:
    """A ratio as ``1.23x``, ``-`` for None."""
    return "-" if value is None else f"{value:.2f}x"


def num(value: float | None, digits: int = 0) -> str:
    """`value` with thousands separators, ``-`` for None or NaN (no figures)."""
    return "-" if value is None or value != value else f"{value:,.{digits}f}"


def pct(value: float | None, digits: int = 0) -> str:
    """A share as a percentage, ``-`` for None."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def aligned(table: Sequence[Sequence[str]], left: int) -> list[str]:
    """`table` (a header row, then rows) as lines: the first `left` columns left-aligned,
    the others right-aligned, a rule under the header."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for i, row in enumerate(table):
        text = [
            c.ljust(w) if j < left else c.rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(text).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


HEADER = (
    "N|contender|ops/s|p50 ms|p99 ms|x raw|x pgbench|client µs/op|server µs/op|steal max|others"
)


def format_table(cells: Sequence[Cell], ops: Sequence[str], rounds: int) -> str:
    """Render the results as aligned text: a block per network and operation, a row per cell."""
    order = {key: i for i, key in enumerate(BY_KEY)}
    lines = [
        f"ops/s: median of {rounds} round{'s' if rounds != 1 else ''} (noisy rounds left "
        "out); p50/p99 over the kept rounds; x raw: ratio to raw psycopg autocommit of the "
        "same kind (threads/asyncio); x pgbench: ratio to pgbench at the same N; "
        "client/server µs/op: CPU time per operation of the client process (pgbench's own "
        "for pgbench) and of the PostgreSQL server's processes; steal max: most CPU the "
        "host stole in a round; others: other processes' share of the machine's CPU"
    ]
    networks = _networks(cells)
    for network in networks:
        for op in ops:
            rows = sorted(
                (c for c in cells if c.op == op and c.network == network),
                key=lambda c: (c.concurrency, order.get(c.contender, 99)),
            )
            if not rows:
                continue
            table = [HEADER.split("|")]
            for i, c in enumerate(rows):
                n = "" if i and rows[i - 1].concurrency == c.concurrency else str(c.concurrency)
                note = " *" if c.exhausted else ""
                note += f" ({c.rounds_noisy} noisy left out)" if c.rounds_noisy else ""
                rate = "missing" if c.missing else num(c.ops_per_s)
                figures = [
                    num(c.p50_ms, 3),
                    num(c.p99_ms, 3),
                    ratio(c.vs_raw),
                    ratio(c.vs_pgbench),
                ]
                figures += [num(c.client_us_per_op), num(c.server_us_per_op)]
                table.append(
                    [n, c.label + note, rate, *figures, pct(c.steal_max), pct(c.others_median)]
                )
            title = OP_TITLES.get(op, op)
            if len(networks) > 1 or network != "loopback":
                title += f" [{network}" + (" each way]" if network != "loopback" else "]")
            lines += ["", title, *aligned(table, 2)]
    if any(c.exhausted for c in cells):
        lines += ["", "* the delete pool ran out in a round (deletes outran the pool's sizing)"]
    if any(c.missing for c in cells):
        lines += ["", "missing: every round of the cell was noisy (see --max-steal)"]
    return "\n".join(lines)
