"""The command line ``python -m benchmarks``, and what ``python -m benchmarks.web`` shares
with it: the options both take, the database, the run's metadata, the JSON; see
docs/performance.md."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg_pool

import sessionstore
from sessionstore.testing import PostgresServer, ephemeral_postgres

from . import plot, report
from .contenders import CONTENDERS
from .measure import OPS, Sample
from .pgbench import PgbenchChoice, find_pgbench
from .progress import Progress
from .runner import LOOPBACK, Bench, Key, Settings, delay_proxy, delete_pool_size, network_label
from .scale import format_scale, run_scale

S = TypeVar("S")

DSN_ENV = "SESSIONSTORE_DSN"
RESULTS_DIR = Path("benchmarks") / "results"
DEFAULT_JSON = RESULTS_DIR / "latest.json"
DEFAULT_PLOT = RESULTS_DIR / "throughput.png"

#: What ``--quick`` changes (options given explicitly still win).
QUICK = dict(rows=10_000, concurrency=(1, 16), rounds=1, duration=0.7, warmup=0.2, networks=(None,))


def concurrency_list(text: str) -> tuple[int, ...]:
    """Parse ``"1,4,16"`` into positive ints."""
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or any(v < 1 for v in values):
        raise ValueError("concurrency must be a comma-separated list of positive integers")
    return values


def names_list(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """Parse a comma-separated list of names, checking each against `allowed`."""
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(
            f"unknown {what}: {', '.join(unknown) or '(none)'}; choose from " + ", ".join(allowed)
        )
    return values


def networks_list(text: str) -> tuple[float | None, ...]:
    """Parse ``"loopback,0.5"``: ``loopback`` (direct) or delays in ms each way (>= 0)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    values = tuple(None if part == LOOPBACK else float(part) for part in parts)
    if not values or any(v is not None and not (math.isfinite(v) and v >= 0) for v in values):
        raise ValueError("--network: give loopback and/or delays in ms >= 0, comma-separated")
    return values


_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "path": Path,
    "ints": concurrency_list,
}

#: The options both benchmarks take, in `add_options`' format.
COMMON_OPTIONS = """
--dsn str PostgreSQL to use (default: $SESSIONSTORE_DSN, else a throw-away one)
--rows int sessions preloaded
--rounds int rounds
--duration float seconds counted per measurement
--warmup float seconds of warm-up per measurement
--max-steal float leave out rounds where the host stole more than this share of the CPU
"""


def add_options(parser: argparse.ArgumentParser, defaults: object, table: str) -> None:
    """Add the options of `table`, a line each: ``--name type help``; the help gets the
    default from `defaults`' attribute of that name; type ``flag`` is a switch."""
    for line in filter(str.strip, table.splitlines()):
        flag, kind, text = line.split(maxsplit=2)
        if kind == "flag":
            parser.add_argument(flag, action="store_true", help=text)
            continue
        default = getattr(defaults, flag[2:].replace("-", "_"), None)
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        elif isinstance(default, int | float):
            default = f"{default:,}" if type(default) is int else f"{default:g}"
        if default is not None and "(default" not in text:
            text += f" (default {default})"
        parser.add_argument(flag, type=_TYPES[kind], help=text)


def check_common(s: Any) -> None:
    """Raise ValueError if the common settings are out of range."""
    if s.rows < 1 or s.rounds < 1:
        raise ValueError("--rows and --rounds must be at least 1")
    if s.duration <= 0 or s.warmup < 0:
        raise ValueError("--duration must be positive and --warmup not negative")
    if not 0 <= s.max_steal <= 1:
        raise ValueError("--max-steal must be a share of the CPU between 0 and 1")


def parse(
    parser: argparse.ArgumentParser,
    settings_from: Callable[[argparse.Namespace], S],
    argv: Sequence[str] | None,
) -> tuple[argparse.Namespace, S]:
    """The arguments and the settings, or the parser's error exit."""
    args = parser.parse_args(argv)
    try:
        return args, settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))


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
    say("starting a throw-away PostgreSQL (durable: fsync and synchronous_commit on)")
    with ephemeral_postgres(env_var=None, durable=True) as server:
        description = f"throw-away server from {server.source}, {server.host}:{server.port}"
        yield server.dsn, description, server


def say(message: str) -> None:
    """Tell the user, on stderr."""
    print(message, file=sys.stderr, flush=True)


def server_info(dsn: str) -> dict[str, Any]:
    """The server's version and the settings that matter for throughput."""
    names = "server_version fsync synchronous_commit shared_buffers max_connections".split()
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {n: (conn.execute(f"SHOW {n}".encode()).fetchone() or (None,))[0] for n in names}


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


def settings_json(settings: Any, **extra: Any) -> dict[str, Any]:
    """`settings` (a dataclass) for the JSON, tuples as lists, with `extra`."""
    values = dataclasses.asdict(settings).items()
    return {**{k: list(v) if isinstance(v, tuple) else v for k, v in values}, **extra}


def print_head(title: str, meta: dict[str, Any], server_is: str) -> None:
    """The report's first lines: the run, and the PostgreSQL server (`server_is` its name)."""
    server = meta["server"]
    print(f"{title}, {meta['date']}: {meta['command']}")
    print(
        f"{server_is}: PostgreSQL {server['server_version']} ({meta['server_source']}); "
        f"fsync={server['fsync']}, synchronous_commit={server['synchronous_commit']}"
    )


def _finite(value: Any) -> Any:
    """`value` for the JSON: dataclasses as dicts, NaN/inf (no latencies) as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _finite(dataclasses.asdict(value))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the run's JSON document, and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(document), indent=2) + "\n")
    print(f"\nJSON: {path}")


def warn_leftover_threads() -> None:
    """Say if any thread but the main one still runs (a pool or worker not stopped)."""
    leftovers = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if leftovers:
        say(f"warning: threads still running: {', '.join(leftovers)}")


OPTIONS = f"""
--payload int bytes per session
--concurrency ints concurrent callers, comma-separated
--ops str operations, comma-separated: {", ".join(OPS)} (default all)
--contenders str contenders, comma-separated: {", ".join(c.key for c in CONTENDERS)} (default all)
--pgbench str the pgbench executable (default: the server's own, else found)
--table str the benchmark's table
--seed int random seed
--json path JSON output (default {DEFAULT_JSON})
--plot path the chart, written as .png and .svg (default {DEFAULT_PLOT})
--no-plot flag do not draw the chart
--quick flag about a minute: 10,000 rows, N=1,16, one round of 0.7 s per measurement
--scale flag also run the scale part (loads 1M rows)
--scale-only flag run the scale part only
--scale-rows ints table sizes for --scale
--keep-table flag leave the benchmark's tables behind
--citus flag distribute the table by token (--dsn a Citus coordinator)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throughput and latency of sessionstore's Store and AsyncStore against "
        "raw psycopg and pgbench, on a preloaded sessions table (docs/performance.md).",
    )
    add_options(p, Settings(), COMMON_OPTIONS + OPTIONS)
    p.set_defaults(json=DEFAULT_JSON, plot=DEFAULT_PLOT)
    net = p.add_mutually_exclusive_group()
    net.add_argument(
        "--network",
        type=networks_list,
        help="networks, comma-separated: loopback and/or delays in ms each way through a "
        "proxy process (default loopback,0.5; --quick: loopback)",
    )
    net.add_argument("--delay-ms", type=float, help="shorthand for --network loopback,D")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Build the settings: defaults, then ``--quick``'s, then explicit options."""
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    opts = "rows payload concurrency rounds duration warmup table seed pgbench scale_rows max_steal"
    values.update({n: getattr(args, n) for n in opts.split() if getattr(args, n) is not None})
    if args.ops:
        values["ops"] = names_list(args.ops, OPS, "operation")
    if args.contenders:
        values["contenders"] = names_list(args.contenders, [c.key for c in CONTENDERS], "contender")
    if args.network is not None:
        values["networks"] = args.network
    elif args.delay_ms is not None:
        values["networks"] = networks_list(f"loopback,{args.delay_ms}")
    values.update(scale=args.scale or args.scale_only, keep_table=args.keep_table, citus=args.citus)
    settings = Settings(**values)
    check_common(settings)
    if settings.payload < 0:
        raise ValueError("--payload must be at least 0")
    return settings


def _meta(settings: Settings, source: str, dsn: str, pgbench: PgbenchChoice) -> dict[str, Any]:
    s = settings
    return {
        **run_meta("python -m benchmarks", source, dsn),
        "psycopg_impl": psycopg.pq.__impl__,
        "libpq": psycopg.pq.version(),
        "psycopg_pool": psycopg_pool.__version__,
        "pgbench": pgbench.path,
        "pgbench_version": pgbench.version,
        "pgbench_missing": pgbench.reason or None,
        "settings": settings_json(
            s,
            pool_size="min(N, 16)",
            delete_pool_rows=delete_pool_size(s),
            networks=[network_label(d) for d in s.networks],
        ),
    }


def _run_network(
    bench: Bench, dsn: str, delay: float | None, progress: Progress, meta: dict[str, Any]
) -> dict[Key, list[Sample]]:
    """Run the sweep on one network: direct, or through a delaying proxy process."""
    label = network_label(delay)
    if delay is None:
        bench.use_network(label, dsn)
        return bench.run(progress)
    with delay_proxy(dsn, delay) as (proxy_dsn, pid):
        say(f"network {label} each way: proxy process {pid}")
        meta.setdefault("proxy_pids", {})[label] = pid
        bench.use_network(label, proxy_dsn, {"proxy": pid})
        try:
            return bench.run(progress)
        finally:
            bench.use_network(LOOPBACK, dsn)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args, settings = parse(build_parser(), settings_from, argv)
    # Said before the run, not after it: a full run takes a quarter of an hour.
    plot_missing = None if args.no_plot else plot.unavailable()
    if plot_missing:
        say(f"{plot_missing}; running without the chart")
    started = time.monotonic()
    try:
        with database(args.dsn) as (dsn, source, server):
            say(f"server: {source}")
            # Looked up only now: the pgbench to prefer is the one of the server's install.
            pgbench = PgbenchChoice(None)
            if "pgbench" in settings.contenders and not args.scale_only:
                pgbench = find_pgbench(settings.pgbench, server)
                found = f"pgbench: {pgbench.path} ({pgbench.version})"
                say(found if pgbench.path else f"{pgbench.reason}: running without pgbench")
            meta = _meta(settings, source, dsn, pgbench)
            samples: dict[Key, list[Sample]] = {}
            if not args.scale_only:
                with contextlib.closing(Bench(dsn, settings, pgbench.path)) as bench:
                    bench.setup(say)
                    meta["server_pid_local"] = bench.server_pid is not None
                    steps = len(bench.plan()) * len(settings.networks)
                    with contextlib.closing(Progress(steps)) as progress:
                        for delay in settings.networks:
                            samples.update(_run_network(bench, dsn, delay, progress, meta))
            scale = run_scale(dsn, settings, say) if settings.scale else None
    except KeyboardInterrupt:
        say("\ninterrupted: pools closed, tables dropped, server stopped")
        return 130
    warn_leftover_threads()
    cells = report.summarize(samples, settings.max_steal)
    _print_report(settings, meta, cells, time.monotonic() - started)
    if scale is not None:
        print("\n" + format_scale(scale))
    write_json(args.json, {"meta": meta, "results": cells, "scale": scale})
    if cells and not args.no_plot:
        if plot_missing:
            print(f"plot: not drawn: {plot_missing}")
        else:
            # The chart shows the first network's cells (loopback in a full run).
            first = network_label(settings.networks[0])
            shown = [c for c in cells if c.network == first]
            subtitle = plot.subtitle(meta)
            written = plot.draw(shown, settings.ops, settings.concurrency, subtitle, args.plot)
            print("plot: " + ", ".join(map(str, written)))
    return 0


def _print_report(
    s: Settings, meta: dict[str, Any], cells: list[report.Cell], elapsed: float
) -> None:
    print_head("sessionstore benchmark", meta, "server")
    print(
        f"client: Python {meta['python']}, psycopg {meta['psycopg']} ({meta['psycopg_impl']}), "
        f"psycopg_pool {meta['psycopg_pool']}, {meta['cpus']} CPUs; "
        f"pgbench: {meta.get('pgbench_version') or 'not used'}"
    )
    if not cells:
        print(f"scale part only, {s.payload}-byte payloads; run took {elapsed:.0f} s")
        return
    print(
        f"workload: {s.rows:,} sessions, {s.payload}-byte payloads, {s.rounds} round(s) of "
        f"{s.warmup:g} s warm-up + {s.duration:g} s, pool size min(N, 16); "
        f"run took {elapsed:.0f} s"
    )
    if meta["pgbench_missing"]:
        print(f"note: the pgbench row is left out: {meta['pgbench_missing']}")
    print(report.run_noise(cells) + f" (--max-steal {s.max_steal:g})")
    if not meta.get("server_pid_local"):
        print("note: the server is not on this machine: no server CPU per operation")
    print("\n" + report.format_table(cells, s.ops, s.rounds))
    if s.rounds == 1:
        print(
            "\nnote: one round per cell; on a shared machine single samples vary by tens "
            "of percent: compare contenders with the full run (3 rounds, 2 s each)"
        )
    comparison = report.compare(cells)
    if comparison:
        print("\n" + "\n".join(comparison))
