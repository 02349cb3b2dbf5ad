"""The web benchmark's summaries: medians, percentiles, ratios, noise, and the tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..report import aligned, median, noise_line, num, pct, per_op, rates, ratio
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


def noisy(load: Load, max_steal: float, max_others: float) -> bool:
    """Whether the host stole, or other processes used, too much CPU during `load`."""
    usage = load.sample.usage
    return usage is not None and usage.noise.noisy(max_steal, max_others)


def summarize(
    samples: Mapping[Key, Sequence[Load]], max_steal: float, max_others: float
) -> list[WebCell]:
    """Turn the measurements into cells, noisy rounds left out, ratios filled in."""
    cells: dict[Key, WebCell] = {}
    for (framework, workload, key, clients), loads in samples.items():
        contender = BY_KEY[key]
        kept = [load for load in loads if not noisy(load, max_steal, max_others)]
        noises = [None if ld.sample.usage is None else ld.sample.usage.noise for ld in loads]
        steals = [None if n is None else n.steal for n in noises]
        measured = [(ld.sample, ld.sample.usage) for ld in kept if ld.sample.usage is not None]
        cells[(framework, workload, key, clients)] = WebCell(
            framework,
            workload,
            key,
            contender.label,
            contender.store,
            clients,
            *rates([ld.sample for ld in loads], [ld.sample for ld in kept]),
            default=contender.default,
            rounds_noisy=len(loads) - len(kept),
            missing=not kept,
            steal_by_round=steals,
            others_by_round=[None if n is None else n.others for n in noises],
            steal_max=max((s for s in steals if s is not None), default=None),
            client_us_per_request=median(per_op(s, u.client) for s, u in measured),
            client_core=median(u.client / u.seconds if u.seconds else None for _, u in measured),
            server_us_per_request=median(per_op(s, u.helpers.get("web")) for s, u in measured),
            db_us_per_request=median(per_op(s, u.server) for s, u in measured),
            wal_bytes_per_request=median(load.wal_per_request for load in kept),
            reconnects=sum(load.reconnects for load in loads),
        )
    # The references of each (framework, workload, clients); one that served nothing in
    # its window (a window shorter than one request) gives no ratio.
    refs: dict[tuple[str, str, int, str], float] = {}
    for c in cells.values():
        for role in ("default" if c.default else None, c.store):
            if role and not c.missing and c.requests_per_s > 0:
                refs[(c.framework, c.workload, c.clients, role)] = c.requests_per_s
    for c in (c for c in cells.values() if not c.missing):
        default = refs.get((c.framework, c.workload, c.clients, "default"))
        redis = refs.get((c.framework, c.workload, c.clients, "redis"))
        c.vs_default = None if default is None else c.requests_per_s / default
        c.vs_redis = None if redis is None else c.requests_per_s / redis
    return list(cells.values())


def run_noise(cells: Sequence[WebCell]) -> str:
    """The run's noise line, over every round, with the most the other processes used."""
    steals = [s for c in cells for s in c.steal_by_round]
    others = [o for c in cells for o in c.others_by_round if o is not None]
    most = f", {pct(max(others, default=None), 1)} at most"
    missing = sum(1 for c in cells if c.missing)
    return noise_line(steals, steals, others, sum(c.rounds_noisy for c in cells), missing, most)


HEADER = (
    "workload|N|store|req/s|p50 ms|p99 ms|x default|x redis|WAL B/req|client µs/req|"
    "client core|server µs/req|db µs/req|steal by round|others by round"
)


def format_tables(
    cells: Sequence[WebCell], frameworks: Sequence[str], servers: Mapping[str, str]
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
        "client µs/req and client core: the load generator's CPU per request and its share "
        "of one core; server µs/req: the web server's processes' CPU per request; db "
        "µs/req: PostgreSQL's; steal and others by round: CPU stolen by the host, and other "
        "processes' share of the machine, in each round"
    ]
    workloads = {w: i for i, w in enumerate(WORKLOADS)}
    for framework in frameworks:
        order = {c.key: i for i, c in enumerate(of_framework(framework))}
        rows = sorted(
            (c for c in cells if c.framework == framework),
            key=lambda c: (workloads.get(c.workload, 99), c.clients, order.get(c.contender, 99)),
        )
        lines += ["", f"{framework}: {servers.get(framework, '')}"]
        table = [HEADER.split("|")]
        for i, c in enumerate(rows):
            label = c.label + (" [default]" if c.default else "")
            label += f" ({c.rounds_noisy} noisy left out)" if c.rounds_noisy else ""
            label += f" ({c.reconnects} reconnects)" if c.reconnects else ""
            first = i == 0 or (c.workload, c.clients) != (rows[i - 1].workload, rows[i - 1].clients)
            rate = "missing" if c.missing else num(c.requests_per_s)
            ratios = [ratio(c.vs_default), ratio(c.vs_redis), num(c.wal_bytes_per_request)]
            cpu = [num(c.client_us_per_request), pct(c.client_core), num(c.server_us_per_request)]
            noise = [" ".join(map(pct, c.steal_by_round)), " ".join(map(pct, c.others_by_round))]
            head = [c.workload, str(c.clients)] if first else ["", ""]
            latency = [num(c.p50_ms, 2), num(c.p99_ms, 2)]
            table.append(
                [*head, label, rate, *latency, *ratios, *cpu, num(c.db_us_per_request), *noise]
            )
        if rows:
            lines += aligned(table, 3)
    busy = [c for c in cells if c.client_core is not None and c.client_core > 0.8]
    if busy:
        worst = max(busy, key=lambda c: c.client_core or 0.0)
        lines += [
            "",
            f"note: the load generator used more than 80% of a core in {len(busy)} cell(s) "
            f"(at most {pct(worst.client_core)}: {worst.framework} {worst.label}, "
            f"{worst.workload}, N={worst.clients}): it may have limited them",
        ]
    return "\n".join(lines)
