"""The command line: ``python -m benchmarks [options]``; what it measures: docs/performance.md."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool

import sessionstore
from sessionstore.testing import PostgresServer, ephemeral_postgres

from . import plot, report
from .contenders import CONTENDERS
from .measure import OPS, Sample
from .pgbench import PgbenchChoice, find_pgbench
from .progress import Progress
from .runner import (
    Bench,
    Key,
    Settings,
    concurrency_list,
    delay_proxy,
    delete_pool_size,
    names_list,
    network_label,
    networks_list,
    server_info,
)
from .scale import format_scale, run_scale

DSN_ENV = "SESSIONSTORE_DSN"
RESULTS_DIR = Path("benchmarks") / "results"
DEFAULT_JSON = RESULTS_DIR / "latest.json"
DEFAULT_PLOT = RESULTS_DIR / "throughput.png"

#: What ``--quick`` changes (options given explicitly still win).
QUICK = {
    "rows": 10_000,
    "concurrency": (1, 16),
    "rounds": 1,
    "duration": 0.7,
    "warmup": 0.2,
    "networks": (None,),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    defaults = Settings()
    keys = ", ".join(c.key for c in CONTENDERS)
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throughput and latency of sessionstore's Store and AsyncStore against "
        "raw psycopg and pgbench, on a preloaded sessions table.",
    )
    p.add_argument("--dsn", help=f"PostgreSQL to use (default: ${DSN_ENV}, else a throw-away one)")
    p.add_argument("--rows", type=int, help=f"live sessions preloaded (default {defaults.rows:,})")
    p.add_argument("--payload", type=int, help=f"bytes per session (default {defaults.payload})")
    p.add_argument(
        "--concurrency",
        type=concurrency_list,
        help="concurrent callers, comma-separated (default 1,4,16,64)",
    )
    p.add_argument("--rounds", type=int, help=f"rounds (default {defaults.rounds})")
    p.add_argument(
        "--duration",
        type=float,
        help=f"seconds counted per measurement (default {defaults.duration})",
    )
    p.add_argument(
        "--warmup",
        type=float,
        help=f"seconds of warm-up per measurement (default {defaults.warmup})",
    )
    p.add_argument(
        "--ops", help="operations, comma-separated: " + ", ".join(OPS) + " (default all)"
    )
    p.add_argument("--contenders", help=f"contenders, comma-separated: {keys} (default all)")
    p.add_argument("--pgbench", help="the pgbench executable (default: search PATH and PostgreSQL)")
    p.add_argument("--table", help=f"the benchmark's table (default {defaults.table})")
    p.add_argument("--seed", type=int, help="random seed (default 1)")
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"JSON output (default {DEFAULT_JSON})"
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=DEFAULT_PLOT,
        help=f"the chart, written as .png and .svg (default {DEFAULT_PLOT})",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the chart")
    p.add_argument(
        "--quick",
        action="store_true",
        help="about a minute: 10,000 rows, N=1,16, one round of 0.7 s per measurement",
    )
    p.add_argument("--scale", action="store_true", help="also run the scale part (loads 1M rows)")
    p.add_argument(
        "--scale-only", action="store_true", help="run the scale part only (no throughput sweep)"
    )
    p.add_argument(
        "--scale-rows",
        type=concurrency_list,
        help="table sizes for --scale (default 10000,100000,1000000)",
    )
    p.add_argument("--keep-table", action="store_true", help="leave the benchmark's tables behind")
    p.add_argument(
        "--citus",
        action="store_true",
        help="distribute the table by token (--dsn must be a Citus coordinator; "
        "docs/scaling.md#citus)",
    )
    net = p.add_mutually_exclusive_group()
    net.add_argument(
        "--network",
        type=networks_list,
        help="networks, comma-separated: loopback (direct) and/or delays in ms each way "
        "through a proxy process (default loopback,0.5; --quick: loopback)",
    )
    net.add_argument(
        "--delay-ms",
        type=float,
        help="shorthand for --network loopback,D: also measure through a proxy adding D ms "
        "each way",
    )
    p.add_argument(
        "--max-steal",
        type=float,
        help=f"leave out rounds where the host stole more than this share of the CPU "
        f"(default {defaults.max_steal:g})",
    )
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Build the settings: defaults, then ``--quick``'s, then explicit options."""
    values: dict[str, Any] = {}
    if args.quick:
        values.update(QUICK)
    names = (
        "rows payload concurrency rounds duration warmup table seed pgbench scale_rows max_steal"
    )
    for name in names.split():
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.ops:
        values["ops"] = names_list(args.ops, OPS, "operation")
    if args.contenders:
        values["contenders"] = names_list(args.contenders, [c.key for c in CONTENDERS], "contender")
    if args.network is not None:
        values["networks"] = args.network
    elif args.delay_ms is not None:
        values["networks"] = networks_list(f"loopback,{args.delay_ms}")
    values["scale"] = args.scale or args.scale_only
    values["keep_table"] = args.keep_table
    values["citus"] = args.citus
    settings = Settings(**values)
    if settings.rows < 1 or settings.payload < 0 or settings.rounds < 1:
        raise ValueError("--rows and --rounds must be at least 1, --payload at least 0")
    if settings.duration <= 0 or settings.warmup < 0:
        raise ValueError("--duration must be positive and --warmup not negative")
    if not 0 <= settings.max_steal <= 1:
        raise ValueError("--max-steal must be a share of the CPU between 0 and 1")
    return settings


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, str, PostgresServer | None]]:
    """Yield (dsn, description, server) of the server to use, starting one if none is named."""
    if dsn:
        yield dsn, "--dsn", None
        return
    env = os.environ.get(DSN_ENV, "")
    if env:
        yield env, f"${DSN_ENV}", None
        return
    _say("starting a throw-away PostgreSQL (durable: fsync and synchronous_commit on)")
    with ephemeral_postgres(env_var=None, durable=True) as server:
        description = f"throw-away server from {server.source}, {server.host}:{server.port}"
        yield server.dsn, description, server


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_meta(program: str, source: str, dsn: str) -> dict[str, Any]:
    """What a benchmark's JSON says first: when, how it was run, on what server and machine."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": program + " " + " ".join(sys.argv[1:]),
        "server_source": source,
        "server": server_info(dsn),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sessionstore": sessionstore.__version__,
        "psycopg": psycopg.__version__,
    }


def _meta(settings: Settings, source: str, dsn: str, pgbench: PgbenchChoice) -> dict[str, Any]:
    return {
        **run_meta("python -m benchmarks", source, dsn),
        "psycopg_impl": psycopg.pq.__impl__,
        "libpq": psycopg.pq.version(),
        "psycopg_pool": psycopg_pool.__version__,
        "pgbench": pgbench.path,
        "pgbench_version": pgbench.version,
        "pgbench_missing": pgbench.reason or None,
        "settings": {
            "rows": settings.rows,
            "payload": settings.payload,
            "concurrency": list(settings.concurrency),
            "rounds": settings.rounds,
            "duration": settings.duration,
            "warmup": settings.warmup,
            "ops": list(settings.ops),
            "contenders": list(settings.contenders),
            "pool_size": "min(N, 16)",
            "delete_pool_rows": delete_pool_size(settings),
            "table": settings.table,
            "seed": settings.seed,
            "networks": [network_label(d) for d in settings.networks],
            "max_steal": settings.max_steal,
        },
    }


def _finite(value: Any) -> Any:
    """Replace NaN/inf (no latencies) with None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _run_network(
    bench: Bench, dsn: str, delay: float | None, progress: Progress, meta: dict[str, Any]
) -> dict[Key, list[Sample]]:
    """Run the sweep on one network: direct, or through a delaying proxy process."""
    label = network_label(delay)
    if delay is None:
        bench.use_network(label, dsn)
        return bench.run(on_step=progress.step, before_step=progress.show)
    with delay_proxy(dsn, delay) as (proxy_dsn, pid):
        _say(f"network {label} each way: proxy process {pid}")
        meta.setdefault("proxy_pids", {})[label] = pid
        bench.use_network(label, proxy_dsn, {"proxy": pid})
        try:
            return bench.run(on_step=progress.step, before_step=progress.show)
        finally:
            bench.use_network("loopback", dsn)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    # Said before the run, not after it: a full run takes a quarter of an hour.
    plot_missing = None if args.no_plot else plot.unavailable()
    if plot_missing:
        _say(f"{plot_missing}; running without the chart")
    started = time.monotonic()
    try:
        with database(args.dsn) as (dsn, source, server):
            _say(f"server: {source}")
            # Looked up only now: the pgbench to prefer is the one of the server's install.
            pgbench = PgbenchChoice(None)
            if "pgbench" in settings.contenders and not args.scale_only:
                pgbench = find_pgbench(settings.pgbench, server)
                if pgbench.path is None:
                    _say(f"{pgbench.reason}: running without pgbench")
                else:
                    _say(f"pgbench: {pgbench.path} ({pgbench.version})")
            meta = _meta(settings, source, dsn, pgbench)
            samples: dict[Key, list[Sample]] = {}
            if not args.scale_only:
                bench = Bench(dsn, settings, pgbench.path)
                try:
                    bench.setup(_say)
                    meta["server_pid_local"] = bench.server_pid is not None
                    progress = Progress(len(bench.plan()) * len(settings.networks))
                    try:
                        for delay in settings.networks:
                            samples.update(_run_network(bench, dsn, delay, progress, meta))
                    finally:
                        progress.close()
                finally:
                    bench.close()
            scale = None
            if settings.scale:
                scale = run_scale(dsn, settings, _say)
    except KeyboardInterrupt:
        _say("\ninterrupted: pools closed, tables dropped, server stopped")
        return 130
    leftovers = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if leftovers:
        _say(f"warning: threads still running: {', '.join(leftovers)}")

    cells = report.summarize(samples, settings.max_steal)
    elapsed = time.monotonic() - started
    server = meta["server"]
    print(f"sessionstore benchmark, {meta['date']}: {meta['command']}")
    print(
        f"server: PostgreSQL {server['server_version']} ({source}); fsync={server['fsync']}, "
        f"synchronous_commit={server['synchronous_commit']}"
    )
    print(
        f"client: Python {meta['python']}, psycopg {meta['psycopg']} ({meta['psycopg_impl']}), "
        f"psycopg_pool {meta['psycopg_pool']}, {meta['cpus']} CPUs; "
        f"pgbench: {meta.get('pgbench_version') or 'not used'}"
    )
    if cells:
        print(
            f"workload: {settings.rows:,} sessions, {settings.payload}-byte payloads, "
            f"{settings.rounds} round(s) of {settings.warmup:g} s warm-up + "
            f"{settings.duration:g} s, pool size min(N, 16); run took {elapsed:.0f} s"
        )
    else:
        print(f"scale part only, {settings.payload}-byte payloads; run took {elapsed:.0f} s")
    if meta["pgbench_missing"]:
        print(f"note: the pgbench row is left out: {meta['pgbench_missing']}")
    if cells:
        print(report.run_noise(cells) + f" (--max-steal {settings.max_steal:g})")
        if not meta.get("server_pid_local"):
            print("note: the server is not on this machine: no server CPU per operation")
    if cells:
        print()
        print(report.format_table(cells, settings.ops, settings.rounds))
        if settings.rounds == 1:
            print(
                "\nnote: one round per cell; on a shared machine single samples vary by tens "
                "of percent: compare contenders with the full run (3 rounds, 2 s each)"
            )
    comparison = report.compare(cells)
    if comparison:
        print()
        print("\n".join(comparison))
    if scale is not None:
        print()
        print(format_scale(scale))

    document = {
        "meta": meta,
        "results": report.cells_json(cells),
        "scale": scale,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_finite(document), indent=2) + "\n")
    print(f"\nJSON: {args.json}")
    if cells and not args.no_plot:
        if plot_missing:
            print(f"plot: not drawn: {plot_missing}")
        else:
            # The chart shows the first network's cells (loopback in a full run).
            first = network_label(settings.networks[0])
            shown = [c for c in cells if c.network == first]
            written = plot.draw(
                shown, settings.ops, settings.concurrency, plot.subtitle(meta), args.plot
            )
            print("plot: " + ", ".join(map(str, written)))
    return 0
