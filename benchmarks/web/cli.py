"""The command line: ``python -m benchmarks.web [options]``; see docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from sessionstore._from_dsn import create_table

from ..cli import _finite, _say, database, run_meta
from ..noise import Probe, Snapshot, postmaster_of
from ..progress import Progress
from ..runner import concurrency_list, names_list
from ..workload import Table
from .apps import AppConfig
from .client import Load, run_load, steps_for
from .contenders import (
    FRAMEWORKS,
    STORES,
    WORKLOADS,
    WebContender,
    missing_requirements,
    of_framework,
)
from .redis_server import RedisServer, find_redis_server
from .report import Key, WebCell, cells_json, format_tables, noisy, run_noise, summarize
from .server import ROOT, WebServer, child_env

#: The benchmark's schema: dropped (with everything in it) and created at the start.
SCHEMA = "sessionstore_webbench"
#: sessionstore's sessions table, in `SCHEMA`.
TABLE = "web_sessions"
#: Expiry of the preloaded sessions: well beyond any run.
PRELOAD_LIFETIME = dt.timedelta(days=7)
DEFAULT_OUTPUT = Path("benchmarks") / "results" / "web.json"
#: A round in which any contender's sample was noisy is run once more, every contender.
NOISY_RERUNS = 1

_VERSIONS = (
    "litestar uvicorn httptools aiohttp aiohttp-session cryptography django gunicorn flask "
    "werkzeug starlette starsessions redis hiredis flask-session"
).split()


@dataclasses.dataclass
class WebSettings:
    """What to run (the command line's options)."""

    frameworks: tuple[str, ...] = FRAMEWORKS
    workloads: tuple[str, ...] = WORKLOADS
    stores: tuple[str, ...] | None = None
    clients: tuple[int, ...] = (1, 16, 64)
    rounds: int = 3
    duration: float = 2.0
    warmup: float = 1.0
    rows: int = 100_000
    payload: int = 200
    pool: int = 16
    threads: int = 16
    max_steal: float = 0.10
    max_others: float = 0.25
    keep: bool = False
    seed: int = 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    d = WebSettings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.web",
        description="Requests/s, latency and WAL per request of views that read, or read and "
        "update, the session, for sessionstore's integrations against each framework's "
        "own session stores and its Redis store.",
    )
    p.add_argument(
        "--dsn", help="PostgreSQL to use (default: $SESSIONSTORE_DSN, else a throw-away one)"
    )
    p.add_argument(
        "--frameworks",
        help=f"comma-separated, of {', '.join(FRAMEWORKS)} (default all)",
    )
    p.add_argument(
        "--workloads",
        help=f"comma-separated, of {', '.join(WORKLOADS)}: every request writes, reads only "
        "(after one write), or nine reads per write (default all)",
    )
    p.add_argument(
        "--stores",
        help=f"comma-separated, of {', '.join(STORES)} (default all; the ratios need the "
        "default store and redis)",
    )
    p.add_argument(
        "--clients",
        type=concurrency_list,
        help="concurrent clients, comma-separated (default 1,16,64)",
    )
    p.add_argument("--rounds", type=int, help=f"rounds (default {d.rounds})")
    p.add_argument("--duration", type=float, help=f"seconds counted (default {d.duration:g})")
    p.add_argument("--warmup", type=float, help=f"seconds of warm-up (default {d.warmup:g})")
    p.add_argument("--rows", type=int, help=f"sessions preloaded per table (default {d.rows:,})")
    p.add_argument("--pool", type=int, help=f"connections per sessionstore app (default {d.pool})")
    p.add_argument("--threads", type=int, help=f"threads of the WSGI worker (default {d.threads})")
    p.add_argument(
        "--max-steal",
        type=float,
        help=f"leave out rounds where the host stole more than this share of the CPU "
        f"(default {d.max_steal:g})",
    )
    p.add_argument(
        "--max-others",
        type=float,
        help=f"leave out rounds where other processes used more than this share of the "
        f"machine's CPU (default {d.max_others:g})",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"JSON output (default {DEFAULT_OUTPUT})",
    )
    p.add_argument("--keep-tables", action="store_true", help="leave the benchmark's schema")
    return p


def settings_from(args: argparse.Namespace) -> WebSettings:
    """The settings: defaults, then the options given."""
    values: dict[str, Any] = {}
    names = ("clients", "rounds", "duration", "warmup", "rows", "pool", "threads")
    for name in (*names, "max_steal", "max_others"):
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.frameworks:
        values["frameworks"] = names_list(args.frameworks, FRAMEWORKS, "framework")
    if args.workloads:
        values["workloads"] = names_list(args.workloads, WORKLOADS, "workload")
    if args.stores:
        values["stores"] = names_list(args.stores, STORES, "store")
    values["keep"] = args.keep_tables
    s = WebSettings(**values)
    if s.rounds < 1 or s.rows < 1 or s.pool < 1 or s.threads < 1:
        raise ValueError("--rounds, --rows, --pool and --threads must be at least 1")
    if s.duration <= 0 or s.warmup < 0:
        raise ValueError("--duration must be positive and --warmup not negative")
    if not (0 <= s.max_steal <= 1 and 0 <= s.max_others <= 1):
        raise ValueError("--max-steal and --max-others must be shares of the CPU, 0 to 1")
    return s


def with_schema(dsn: str) -> str:
    """`dsn` with the benchmark's schema as its search_path (other options kept)."""
    options = psycopg.conninfo.conninfo_to_dict(dsn).get("options")
    path = f"-c search_path={SCHEMA}"
    return psycopg.conninfo.make_conninfo(dsn, options=f"{options} {path}" if options else path)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def server_descriptions(settings: WebSettings) -> dict[str, str]:
    """What serves each framework, for the tables and the JSON."""
    uvicorn = (
        f"uvicorn {_version('uvicorn')} (httptools {_version('httptools')}, asyncio), 1 process"
    )
    gunicorn = f"gunicorn {_version('gunicorn')}, 1 gthread worker x {settings.threads} threads"
    return {
        "litestar": f"Litestar {_version('litestar')} on {uvicorn}",
        "aiohttp": f"aiohttp {_version('aiohttp')} AppRunner (aiohttp-session "
        f"{_version('aiohttp-session')}), 1 process",
        "django": f"Django {_version('django')} on {gunicorn}",
        "flask": f"Flask {_version('flask')} on {gunicorn}",
        "starlette": f"Starlette {_version('starlette')} (starsessions "
        f"{_version('starsessions')}) on {uvicorn}",
    }


class WalProbe(Probe):
    """A `Probe` that also reads PostgreSQL's WAL position at each snapshot."""

    def __init__(
        self, conn: psycopg.Connection[Any], server_pid: int | None, helpers: dict[str, int]
    ) -> None:
        super().__init__(server_pid, helpers)
        self.conn = conn
        self.lsns: list[str] = []

    def snap(self) -> Snapshot:
        """The counters now, the WAL position first (its query is the slower part)."""
        row = self.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        self.lsns.append(str(row[0]))
        return super().snap()

    def wal_bytes(self) -> int | None:
        """WAL written between the first and the last snapshot (None without two)."""
        if len(self.lsns) < 2:
            return None
        row = self.conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (self.lsns[-1], self.lsns[0])
        ).fetchone()
        assert row is not None
        return int(row[0])


class WebBench:
    """The web benchmark against one database."""

    def __init__(self, dsn: str, settings: WebSettings, say: Callable[[str], None]) -> None:
        self.admin_dsn = dsn
        self.dsn = with_schema(dsn)
        self.settings = settings
        self.say = say
        self.contenders: list[WebContender] = []
        self.unavailable: dict[str, str] = {}
        for framework in settings.frameworks:
            for contender in of_framework(framework):
                if settings.stores is not None and contender.store not in settings.stores:
                    continue
                reason = contender.unavailable() if contender.optional else None
                if reason is None:
                    self.contenders.append(contender)
                else:
                    self.unavailable[contender.key] = reason
        self.db_pid: int | None = None
        self._workdir = Path(".")
        self.redis: RedisServer | None = None
        #: The WAL position's connection (the benchmark's own, opened by `setup`).
        self._wal_conn: psycopg.Connection[Any] | None = None
        #: Every measurement, in order: its key, round, attempt and result.
        self.rounds: list[dict[str, Any]] = []

    @property
    def needs_redis(self) -> bool:
        """Whether a Redis contender runs (then `setup` starts redis-server)."""
        return any(c.redis for c in self.contenders)

    def setup(self) -> None:
        """Create the schema and the tables, and preload them; start Redis if needed."""
        s = self.settings
        if self.needs_redis:
            self.redis = RedisServer()
            self.redis.start()
            self.say(f"{self.redis.version.split(' sha=')[0]} on {self.redis.url}, no persistence")
            self.say(f"preloading {s.rows:,} keys ({s.payload}-byte values) into Redis")
            self.redis.preload(s.rows, s.payload)
        self._wal_conn = psycopg.connect(self.admin_dsn, autocommit=True)
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            self.db_pid = postmaster_of(admin.info.backend_pid)
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA))
            )
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        create_table(self.dsn, TABLE)
        expiry = dt.datetime.now(dt.UTC) + PRELOAD_LIFETIME
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.say(f"preloading {s.rows:,} sessions ({s.payload}-byte payloads) into {TABLE}")
            table = Table(TABLE)
            table.preload(conn, 0, s.rows, s.payload, expiry, random.Random(s.seed))
            table.vacuum(conn, analyze=True)
            if "django" in s.frameworks:
                self._django_table(conn, expiry)

    def _django_table(self, conn: psycopg.Connection[Any], expiry: dt.datetime) -> None:
        """Create Django's session table with Django's own migration, and preload it."""
        s = self.settings
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.web.serve", "--migrate-django", f"--dsn={self.dsn}"],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"Django's migrate failed:\n{done.stdout}{done.stderr}")
        self.say(f"preloading {s.rows:,} sessions into django_session")
        rng = random.Random(s.seed + 1)
        data = "x" * s.payload
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY django_session (session_key, session_data, expire_date) FROM STDIN"
            ) as copy,
        ):
            for i in range(s.rows):
                key = hashlib.sha256(f"django:{i}:{rng.random()}".encode()).hexdigest()[:32]
                copy.write_row((key, data, expiry))
        conn.execute("VACUUM (ANALYZE) django_session")

    def close(self) -> None:
        """Stop Redis; drop the schema, unless asked to keep it."""
        try:
            if self.redis is not None:
                self.redis.stop()
        finally:
            if self._wal_conn is not None:
                self._wal_conn.close()
        if self.settings.keep:
            return
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA))
            )

    def plan(self) -> list[tuple[str, str, int, int, WebContender]]:
        """Every measurement: frameworks, workloads, clients, rounds, the contenders rotated."""
        s = self.settings
        steps = []
        for framework in s.frameworks:
            mine = [c for c in self.contenders if c.framework == framework]
            if not mine:
                continue
            for workload in s.workloads:
                for ci, n in enumerate(s.clients):
                    for rnd in range(s.rounds):
                        shift = (rnd + ci) % len(mine)
                        for contender in mine[shift:] + mine[:shift]:
                            steps.append((framework, workload, n, rnd, contender))
        return steps

    def measure(
        self, contender: WebContender, workload: str, clients: int
    ) -> tuple[Load, list[int]]:
        """One measurement: start the contender's server, load it, stop it."""
        s = self.settings
        assert self._wal_conn is not None, "setup() first"
        redis_url = self.redis.url if self.redis is not None and contender.redis else None
        config = AppConfig(self.dsn, TABLE, s.pool, self._workdir, s.threads, redis_url)
        server = WebServer(contender, config)
        with server:
            probe = WalProbe(self._wal_conn, self.db_pid, {"web": server.pid})
            load = asyncio.run(
                run_load(
                    server.port,
                    steps_for(workload, contender.sessions),
                    contender.sessions,
                    clients,
                    s.warmup,
                    s.duration,
                    probe,
                )
            )
            load.wal_bytes = probe.wal_bytes()
        return load, server.processes

    def run(self, progress: Progress) -> dict[Key, list[Load]]:
        """Run the plan; a round with a noisy sample is run once more, all contenders."""
        s = self.settings
        samples: dict[Key, list[Load]] = {}
        rounds: dict[tuple[str, str, int, int], list[WebContender]] = {}
        for framework, workload, n, rnd, contender in self.plan():
            rounds.setdefault((framework, workload, n, rnd), []).append(contender)
        for (framework, workload, n, rnd), order in rounds.items():
            for attempt in range(1 + NOISY_RERUNS):
                any_noisy = False
                for contender in order:
                    again = " (re-run: noisy)" if attempt else ""
                    label = (
                        f"round {rnd + 1}/{s.rounds}{again}: {framework}, {workload}, N={n}, "
                        f"{contender.label}"
                    )
                    progress.show(label)
                    load, processes = self.measure(contender, workload, n)
                    samples.setdefault((framework, workload, contender.key, n), []).append(load)
                    usage = load.sample.usage
                    self.rounds.append(
                        {
                            "framework": framework,
                            "workload": workload,
                            "contender": contender.key,
                            "clients": n,
                            "round": rnd,
                            "attempt": attempt,
                            "requests_per_s": load.sample.ops_per_s,
                            "requests": load.sample.ops,
                            "wal_bytes": load.wal_bytes,
                            "wal_bytes_per_request": load.wal_per_request,
                            "reconnects": load.reconnects,
                            "server_processes": processes,
                            "noise": None if usage is None else dataclasses.asdict(usage.noise),
                            "client_cpu_s": None if usage is None else usage.client,
                            "server_cpu_s": None if usage is None else usage.helpers.get("web"),
                            "db_cpu_s": None if usage is None else usage.server,
                        }
                    )
                    any_noisy = any_noisy or noisy(load, s.max_steal, s.max_others)
                    if not attempt:
                        progress.step(label)
                if not any_noisy:
                    break
        return samples


def _meta(settings: WebSettings, source: str, dsn: str, bench: WebBench) -> dict[str, Any]:
    return {
        **run_meta("python -m benchmarks.web", source, dsn),
        "versions": {name: _version(name) for name in _VERSIONS},
        "redis_server": None
        if bench.redis is None
        else {"version": bench.redis.version, "url": bench.redis.url},
        "servers": server_descriptions(settings),
        "unavailable": dict(bench.unavailable),
        "settings": {
            **{
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(settings).items()
            },
            "schema": SCHEMA,
            "table": TABLE,
            "workers": 1,
            "contenders": [c.key for c in bench.contenders],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the web benchmark; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    missing = missing_requirements(settings.frameworks)
    if missing:
        parser.error(
            f"not installed: {', '.join(missing)}; install the bench extra "
            '(pip install -e ".[bench]") or choose --frameworks'
        )
    if any(c.redis for f in settings.frameworks for c in of_framework(f)) and (
        settings.stores is None or "redis" in settings.stores
    ):
        # Before anything starts: a missing redis-server fails the run, with the command
        # that installs it, rather than leaving the Redis rows out.
        find_redis_server()
    started = time.monotonic()
    try:
        with database(args.dsn) as (dsn, source, _):
            _say(f"server: {source}")
            bench = WebBench(dsn, settings, _say)
            try:
                bench.setup()
                meta = _meta(settings, source, dsn, bench)
                progress = Progress(len(bench.plan()))
                try:
                    samples = bench.run(progress)
                finally:
                    progress.close()
            finally:
                bench.close()
    except KeyboardInterrupt:
        _say("\ninterrupted: servers stopped, schema dropped, database stopped")
        return 130
    leftovers = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if leftovers:
        _say(f"warning: threads still running: {', '.join(leftovers)}")

    cells: list[WebCell] = summarize(samples, settings.max_steal, settings.max_others)
    elapsed = time.monotonic() - started
    server = meta["server"]
    print(f"sessionstore web benchmark, {meta['date']}: {meta['command']}")
    print(
        f"database: PostgreSQL {server['server_version']} ({source}); fsync={server['fsync']}, "
        f"synchronous_commit={server['synchronous_commit']}"
    )
    if bench.redis is not None:
        print(
            f"redis: {bench.redis.version.split(' sha=')[0]}, started by the benchmark, no "
            "persistence (--save '' --appendonly no)"
        )
    print(
        f"machine: {meta['cpus']} CPUs, Python {meta['python']}; every server runs ONE worker "
        f"process (per-core comparison); the clients run in this process, one keep-alive "
        f"connection and cookie jar each"
    )
    print(
        f"workloads: {', '.join(settings.workloads)} of GET /count (read, increment and "
        f"store an integer in the session) and GET /read (read it only), or /ping for the "
        f"ceilings; {settings.rows:,} sessions preloaded per table"
        f"{' and in Redis' if bench.redis else ''}; "
        f"{settings.rounds} round(s) of {settings.warmup:g} s warm-up + {settings.duration:g} s; "
        f"sessionstore pools of {settings.pool}; run took {elapsed:.0f} s"
    )
    print(
        run_noise(cells)
        + f" (--max-steal {settings.max_steal:g}, --max-others {settings.max_others:g})"
    )
    print()
    print(format_tables(cells, settings.frameworks, meta["servers"], bench.unavailable))
    document = {"meta": meta, "results": cells_json(cells), "rounds": bench.rounds}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(_finite(document), indent=2) + "\n")
    print(f"\nJSON: {args.output}")
    return 0
