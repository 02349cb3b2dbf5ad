"""Summaries of the samples: medians, percentiles, ratios, the issue's targets, the table.

For each (network, operation, contender, concurrency): throughput is the median of
the kept rounds' ops/s, a round being left out when the host stole more than
``max_steal`` of the CPU during it; p50 and p99 are taken over the latencies of the
kept rounds together; client and server CPU per operation are the medians of the kept
rounds'. Each contender is compared with the raw psycopg autocommit contender *of its
own kind* (threads with threads, asyncio with asyncio) and with pgbench at the same
concurrency, on the same network.
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
        network: ``"loopback"`` or the added delay, e.g. ``"0.5 ms"``.
        rounds_noisy: Rounds left out because the host stole too much CPU.
        missing: Every round was left out: no figures (NaN throughput).
        steal_max: The most CPU the host stole in any round (0-1), or None.
        steal_median: The median over the rounds, or None.
        others_median: The median share of the machine's CPU that other processes
            used (not the benchmark, its server, pgbench or proxy), or None.
        client_us_per_op: CPU microseconds per operation of the client: this
            process (all its threads), or pgbench's process for pgbench.
        server_us_per_op: CPU microseconds per operation of the PostgreSQL server's
            processes, or None when the server is not on this machine.
        proxy_us_per_op: CPU microseconds per operation of the delaying proxy's
            process (network mode only), or None.
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
    network: str = "loopback"
    rounds_noisy: int = 0
    missing: bool = False
    steal_max: float | None = None
    steal_median: float | None = None
    others_median: float | None = None
    client_us_per_op: float | None = None
    server_us_per_op: float | None = None
    proxy_us_per_op: float | None = None


@dataclasses.dataclass
class Target:
    """One of the issue's targets, checked against this run."""

    description: str
    met: bool
    detail: str
    issue: int = 14


#: The default of ``--max-steal``: rounds in which the host stole more than this share
#: of the CPU are left out. Beyond a tenth, a CPU-bound round on 2 cores loses a tenth
#: of its throughput to the host, as large as the differences the targets judge.
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


#: Issue 14's targets against pgbench, at loopback: (store, concurrency) -> the least
#: ratio, for find, commit and the mix alike.
PGBENCH_TARGETS = {
    ("async_store", 64): 1.0,
    ("async_store", 16): 0.6,
    ("store", 64): 0.6,
    ("store", 16): 0.4,
}

#: Where nothing can be combined the library must cost nothing: the least ratio to raw
#: psycopg (autocommit) at these concurrencies, loopback, for these operations.
RAW_TARGET_LEVELS = (1, 4)
RAW_TARGET_OPS = ("find", "commit")

#: On a delayed network: the least ratio to raw psycopg at these concurrencies, and the
#: least anywhere; for these operations.
NETWORK_TARGET = 2.0
NETWORK_TARGET_LEVELS = (16, 64)
NETWORK_TARGET_OPS = ("find", "commit", "mix")

STORES = ("async_store", "store")


def delay_of(network: str) -> float | None:
    """The one-way delay in ms of a network label (``"0.5 ms"``), None for loopback."""
    return float(network.split()[0]) if network.endswith(" ms") else None


def round_trip_ceiling(callers: int, delay_ms: float) -> float:
    """The most ops/s `callers` closed-loop callers can make when a round trip takes 2 x delay.

    Each caller waits for its answer before asking again, so it makes at most one
    operation per round trip whatever the client and server do: N / (2 D).
    """
    return callers / (2 * delay_ms / 1000)


def issue4_targets(cells: Sequence[Cell]) -> list[Target]:
    """Check issue 4's targets (the first speed issue) on the loopback cells."""
    cells = [c for c in cells if c.network == "loopback" and not c.missing]
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


def check_targets(cells: Sequence[Cell]) -> list[Target]:
    """Check issue 14's targets that this run measured (each one with its figure).

    Args:
        cells: The run's cells.

    Returns:
        Issue 4's targets (`issue4_targets`), then one target per figure checked for
        issue 14: the ratios to pgbench at loopback, the ratios to raw psycopg at 1
        and 4 callers, and on each delayed network the ratios to raw psycopg at 16 and
        64 callers and the lowest at any concurrency.
    """
    targets = [dataclasses.replace(t, issue=4) for t in issue4_targets(cells)]
    by = {(c.network, c.op, c.contender, c.concurrency): c for c in cells if not c.missing}
    networks = sorted({c.network for c in cells}, key=lambda n: (delay_of(n) or 0.0, n))

    def short(key: str) -> str:
        return BY_KEY[key].label.split(" ")[0]

    for (key, n), least in PGBENCH_TARGETS.items():
        for op in ("find", "commit", "mix"):
            cell = by.get(("loopback", op, key, n))
            if cell is not None and cell.vs_pgbench is not None:
                targets.append(
                    Target(
                        f"{short(key)} {op} at N={n} >= {least:.1f}x pgbench",
                        cell.vs_pgbench >= least,
                        f"{cell.vs_pgbench:.2f}x ({cell.ops_per_s:,.0f}/s)",
                    )
                )
    for key in STORES:
        for op in RAW_TARGET_OPS:
            for n in RAW_TARGET_LEVELS:
                cell = by.get(("loopback", op, key, n))
                if cell is not None and cell.vs_raw is not None:
                    targets.append(
                        Target(
                            f"{short(key)} {op} at N={n} >= 1.0x raw psycopg",
                            cell.vs_raw >= 1.0,
                            f"{cell.vs_raw:.2f}x",
                        )
                    )
    for network in networks:
        delay = delay_of(network)
        if delay is None:
            continue
        for key in STORES:
            for op in NETWORK_TARGET_OPS:
                own = sorted(
                    (c for c in cells if (c.network, c.op, c.contender) == (network, op, key)),
                    key=lambda c: c.concurrency,
                )
                for n in NETWORK_TARGET_LEVELS:
                    cell = by.get((network, op, key, n))
                    if cell is None or cell.vs_raw is None:
                        continue
                    raw = by[(network, op, BY_KEY[key].baseline or "", n)]
                    detail = f"{cell.vs_raw:.2f}x, p99 {cell.p99_ms:.2f} ms"
                    if delay > 0:
                        ceiling = round_trip_ceiling(n, delay)
                        detail += (
                            f" (raw {raw.ops_per_s:,.0f}/s; {n} callers can make at most "
                            f"{ceiling:,.0f}/s at a {2 * delay:g} ms round trip)"
                        )
                    targets.append(
                        Target(
                            f"[{network}] {short(key)} {op} at N={n} >= {NETWORK_TARGET:g}x raw",
                            cell.vs_raw >= NETWORK_TARGET,
                            detail,
                        )
                    )
                known = [c for c in own if c.vs_raw is not None and not c.missing]
                if known:
                    worst = min(known, key=lambda c: c.vs_raw or 0.0)
                    targets.append(
                        Target(
                            f"[{network}] {short(key)} {op} >= 1.0x raw at every N",
                            (worst.vs_raw or 0.0) >= 1.0,
                            f"lowest {worst.vs_raw:.2f}x at N={worst.concurrency}",
                        )
                    )
    return targets


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


def format_targets(targets: Sequence[Target]) -> str:
    """Render the targets as lines of text."""
    if not targets:
        return ""
    blocks = []
    for issue in sorted({t.issue for t in targets}):
        lines = [f"targets (issue {issue}):"]
        for t in targets:
            if t.issue == issue:
                lines.append(f"  [{'met ' if t.met else 'MISS'}] {t.description}: {t.detail}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def cells_json(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The cells as JSON-ready dicts."""
    return [dataclasses.asdict(c) for c in cells]


def targets_json(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """The targets as JSON-ready dicts."""
    return [dataclasses.asdict(t) for t in targets]
