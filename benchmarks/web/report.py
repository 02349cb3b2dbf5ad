"""The web benchmark's summaries: medians, percentiles, ratios, noise, and the tables."""

from __future__ import annotations

import dataclasses
import statistics
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from ..measure import percentile
from .client import Load
from .contenders import BY_KEY, WORKLOADS, of_framework

Key = tuple[str, str, str, int]  # (framework, workload, contender key, clients)


@dataclasses.dataclass
class WebCell:
    """The summary of one contender at one number of clients."""

    framework: str
    workload: str
    contender: str
    label: str
    store: str
    clients: int
    requests_per_s: float
    rounds_requests_per_s: list[float]
    p50_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    default: bool
    vs_default: float | None = None
    vs_redis: float | None = None
    wal_bytes_per_request: float | None = None
    rounds_noisy: int = 0
    missing: bool = False
    steal_by_round: list[float | None] = dataclasses.field(default_factory=list)
    others_by_round: list[float | None] = dataclasses.field(default_factory=list)
    steal_max: float | None = None
    client_us_per_request: float | None = None
    client_core: float | None = None
    server_us_per_request: float | None = None
    db_us_per_request: float | None = None
    reconnects: int = 0


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _per_request(load: Load, seconds: float | None) -> float | None:
    if seconds is None or load.sample.cpu_ops <= 0:
        return None
    return seconds / load.sample.cpu_ops * 1e6


def noisy(load: Load, max_steal: float, max_others: float) -> bool:
    """Whether the host stole, or other processes used, too much CPU during `load`."""
    usage = load.sample.usage
    if usage is None:
        return False
    others = usage.noise.others
    return usage.noise.noisy(max_steal) or (others is not None and others > max_others)


def summarize(
    samples: Mapping[Key, Sequence[Load]], max_steal: float, max_others: float
) -> list[WebCell]:
    """Turn the measurements into cells, noisy rounds left out, ratios filled in."""
    cells: dict[Key, WebCell] = {}
    for (framework, workload, key, clients), loads in samples.items():
        contender = BY_KEY[key]
        usages = [load.sample.usage for load in loads]
        kept = [load for load in loads if not noisy(load, max_steal, max_others)]
        latencies: array[float] = array("d")
        for load in kept:
            latencies.extend(load.sample.latencies)
        ordered = sorted(latencies)
        steals = [None if u is None else u.noise.steal for u in usages]
        measured = [(load, load.sample.usage) for load in kept if load.sample.usage is not None]
        cells[(framework, workload, key, clients)] = WebCell(
            framework=framework,
            workload=workload,
            contender=key,
            label=contender.label,
            store=contender.store,
            clients=clients,
            requests_per_s=(
                statistics.median(load.sample.ops_per_s for load in kept) if kept else float("nan")
            ),
            rounds_requests_per_s=[load.sample.ops_per_s for load in loads],
            p50_ms=percentile(ordered, 0.50) * 1000,
            p99_ms=percentile(ordered, 0.99) * 1000,
            mean_ms=statistics.fmean(ordered) * 1000 if ordered else float("nan"),
            requests=len(ordered),
            default=contender.default,
            rounds_noisy=len(loads) - len(kept),
            missing=not kept,
            steal_by_round=steals,
            others_by_round=[None if u is None else u.noise.others for u in usages],
            steal_max=max((s for s in steals if s is not None), default=None),
            client_us_per_request=_median([_per_request(ld, u.client) for ld, u in measured]),
            client_core=_median([u.client / u.seconds if u.seconds else None for _, u in measured]),
            server_us_per_request=_median(
                [_per_request(ld, u.helpers.get("web")) for ld, u in measured]
            ),
            db_us_per_request=_median([_per_request(ld, u.server) for ld, u in measured]),
            wal_bytes_per_request=_median([load.wal_per_request for load in kept]),
            reconnects=sum(load.reconnects for load in loads),
        )
    for cell in cells.values():
        peers = [
            other
            for other in cells.values()
            if (other.framework, other.workload, other.clients)
            == (cell.framework, cell.workload, cell.clients)
            and not other.missing
        ]
        default = next((other for other in peers if other.default), None)
        redis = next((other for other in peers if other.store == "redis"), None)
        # A reference that served nothing in its window (a window shorter than one
        # request) gives no ratio.
        if not cell.missing and default is not None and default.requests_per_s > 0:
            cell.vs_default = cell.requests_per_s / default.requests_per_s
        if not cell.missing and redis is not None and redis.requests_per_s > 0:
            cell.vs_redis = cell.requests_per_s / redis.requests_per_s
    return list(cells.values())


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.0f}%"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def run_noise(cells: Sequence[WebCell]) -> str:
    """One line on the run's noise: steal and the other processes' load, rounds left out."""
    steals = [s for c in cells for s in c.steal_by_round if s is not None]
    others = [o for c in cells for o in c.others_by_round if o is not None]
    worst = max(steals, default=None)
    left_out = sum(c.rounds_noisy for c in cells)
    missing = sum(1 for c in cells if c.missing)
    return (
        f"noise: CPU stolen by the host {_pct(_median(steals))} median, {_pct(worst)} worst "
        f"round; other processes {_pct(_median(others))} of the machine (median), "
        f"{_pct(max(others, default=None))} at most; {left_out} noisy round(s) left out, "
        f"{missing} cell(s) missing"
    )


HEADER = (
    "workload",
    "N",
    "store",
    "req/s",
    "p50 ms",
    "p99 ms",
    "x default",
    "x redis",
    "WAL B/req",
    "client µs/req",
    "client core",
    "server µs/req",
    "db µs/req",
    "steal by round",
    "others by round",
)


def format_tables(
    cells: Sequence[WebCell],
    frameworks: Sequence[str],
    servers: Mapping[str, str],
    unavailable: Mapping[str, str],
) -> str:
    """One table per framework: a row per contender and number of clients."""
    lines = [
        "workload: write (every request changes the session), read (one write creates it, "
        "then reads only), mostly (nine reads per write); "
        "req/s: median of the kept rounds; p50/p99 over the kept rounds' requests; x default "
        "and x redis: ratio to the framework's default store and to its Redis store at the "
        "same workload and N (sessionstore's x redis is sessionstore/Redis); WAL B/req: "
        "bytes of WAL PostgreSQL wrote per request (pg_current_wal_lsn() at the window's "
        "start and end; the stores outside PostgreSQL show the background's share); "
        "client µs/req and client "
        "core: the load generator's CPU per request and its share of one core; server "
        "µs/req: the web server's processes' CPU per request; db µs/req: PostgreSQL's; "
        "steal and others by round: CPU stolen by the host, and other processes' share of "
        "the machine, in each round"
    ]
    for framework in frameworks:
        order = {c.key: i for i, c in enumerate(of_framework(framework))}
        workloads = {w: i for i, w in enumerate(WORKLOADS)}
        rows = sorted(
            (c for c in cells if c.framework == framework),
            key=lambda c: (workloads.get(c.workload, 99), c.clients, order.get(c.contender, 99)),
        )
        lines += ["", f"{framework}: {servers.get(framework, '')}"]
        if rows:
            table: list[tuple[str, ...]] = [HEADER]
            previous: tuple[str, int] | None = None
            for c in rows:
                label = c.label + (" [default]" if c.default else "")
                if c.rounds_noisy:
                    label += f" ({c.rounds_noisy} noisy left out)"
                if c.reconnects:
                    label += f" ({c.reconnects} reconnects)"
                first = (c.workload, c.clients) != previous
                table.append(
                    (
                        c.workload if first else "",
                        str(c.clients) if first else "",
                        label,
                        "missing" if c.missing else _num(c.requests_per_s),
                        _num(c.p50_ms, 2),
                        _num(c.p99_ms, 2),
                        "-" if c.vs_default is None else f"{c.vs_default:.2f}x",
                        "-" if c.vs_redis is None else f"{c.vs_redis:.2f}x",
                        _num(c.wal_bytes_per_request),
                        _num(c.client_us_per_request),
                        _pct(c.client_core),
                        _num(c.server_us_per_request),
                        _num(c.db_us_per_request),
                        " ".join(_pct(s) for s in c.steal_by_round),
                        " ".join(_pct(o) for o in c.others_by_round),
                    )
                )
                previous = (c.workload, c.clients)
            widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
            for i, row in enumerate(table):
                text = [
                    row[j].ljust(widths[j]) if j in (0, 1, 2) else row[j].rjust(widths[j])
                    for j in range(len(row))
                ]
                lines.append("  " + "  ".join(text).rstrip())
                if i == 0:
                    lines.append("  " + "  ".join("-" * w for w in widths))
        for key, reason in unavailable.items():
            if BY_KEY[key].framework == framework:
                lines.append(f"  {BY_KEY[key].label}: not available ({reason})")
    busy = [c for c in cells if c.client_core is not None and c.client_core > 0.8]
    if busy:
        worst = max(busy, key=lambda c: c.client_core or 0.0)
        lines += [
            "",
            f"note: the load generator used more than 80% of a core in {len(busy)} cell(s) "
            f"(at most {_pct(worst.client_core)}: {worst.framework} {worst.label}, "
            f"{worst.workload}, N={worst.clients}): it may have limited them",
        ]
    return "\n".join(lines)


def cells_json(cells: Sequence[WebCell]) -> list[dict[str, Any]]:
    """The cells as JSON-ready dicts."""
    return [dataclasses.asdict(c) for c in cells]
