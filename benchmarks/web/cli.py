"""The command line ``python -m benchmarks.web``: the database set-up (a schema of its own,
tables preloaded as the other benchmarks preload theirs), the rounds, the WAL position
read around each window, the report; see docs/performance-history.md#web-benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from sessionstore._from_dsn import create_table

from .. import cli as common
from ..noise import Probe, postmaster_of
from ..progress import Progress
from ..runner import PRELOAD_LIFETIME, interleave, run_rounds
from ..workload import Table
from . import contenders as wc
from .apps import AppConfig
from .client import Load, run_load, steps_for
from .contenders import FRAMEWORKS, STORES, WORKLOADS, WebContender
from .redis_server import RedisServer, find_redis_server
from .report import Key, WebCell, format_tables, noisy, run_noise, summarize
from .server import ROOT, child_env, serving

#: The benchmark's schema: dropped (with everything in it) and created at the start.
SCHEMA = "sessionstore_webbench"
#: sessionstore's sessions table, in `SCHEMA`.
TABLE = "web_sessions"
DEFAULT_OUTPUT = Path("benchmarks") / "results" / "web.json"

_VERSIONS = """litestar uvicorn httptools aiohttp aiohttp-session cryptography django gunicorn
flask werkzeug flask-session starlette starsessions quart quart-session redis hiredis""".split()


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
    min_pool: int = 1
    threads: int = 16
    max_steal: float = 0.10
    max_others: float = 0.25
    keep: bool = False
    seed: int = 1


OPTIONS = f"""
--frameworks str comma-separated, of {", ".join(FRAMEWORKS)} (default all)
--workloads str comma-separated, of {", ".join(WORKLOADS)} (default all)
--stores str comma-separated, of {", ".join(STORES)} (default all)
--clients ints concurrent clients, comma-separated
--pool int connections per sessionstore app at most
--min-pool int connections a sessionstore pool opens at start (default 1, as the integrations)
--threads int threads of the WSGI worker
--max-others float leave out rounds where other processes used more than this share of the CPU
--output path JSON output (default {DEFAULT_OUTPUT})
--keep-tables flag leave the benchmark's schema
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.web",
        description="Requests/s, latency and WAL per request of views that read, or read and "
        "update, the session, for sessionstore's integrations against each framework's "
        "own session stores and its Redis store (docs/performance.md#web-requests).",
    )
    common.add_options(p, WebSettings(), common.COMMON_OPTIONS + OPTIONS)
    p.set_defaults(output=DEFAULT_OUTPUT)
    return p


def settings_from(args: argparse.Namespace) -> WebSettings:
    """The settings: defaults, then the options given."""
    names = "clients rounds duration warmup rows pool min_pool threads max_steal max_others".split()
    values: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    for name, allowed in (("frameworks", FRAMEWORKS), ("workloads", WORKLOADS), ("stores", STORES)):
        if getattr(args, name):
            values[name] = common.names_list(getattr(args, name), allowed, name[:-1])
    s = WebSettings(**values, keep=args.keep_tables)
    common.check_common(s)
    if s.pool < 1 or s.threads < 1 or not 0 <= s.max_others <= 1:
        raise ValueError("--pool and --threads must be at least 1, --max-others from 0 to 1")
    if not 0 <= s.min_pool <= s.pool:
        raise ValueError("--min-pool must be from 0 to --pool")
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
    v = _version
    uvicorn = f"uvicorn {v('uvicorn')} (httptools {v('httptools')}, asyncio), 1 process"
    gunicorn = f"gunicorn {v('gunicorn')}, 1 gthread worker x {settings.threads} threads"
    session = f"aiohttp-session {v('aiohttp-session')}"
    return {
        "litestar": f"Litestar {v('litestar')} on {uvicorn}",
        "aiohttp": f"aiohttp {v('aiohttp')} AppRunner ({session}), 1 process",
        "django": f"Django {v('django')} on {gunicorn}",
        "flask": f"Flask {v('flask')} on {gunicorn}",
        "starlette": f"Starlette {v('starlette')} (starsessions {v('starsessions')}) on {uvicorn}",
        "quart": f"Quart {v('quart')} (Quart-Session {v('quart-session')}) on {uvicorn}",
    }


class WebBench:
    """The web benchmark against one database."""

    def __init__(self, dsn: str, settings: WebSettings, say: Callable[[str], None]) -> None:
        self.admin_dsn = dsn
        self.dsn = with_schema(dsn)
        self.settings = settings
        self.say = say
        self.contenders: list[WebContender] = [
            c
            for framework in settings.frameworks
            for c in wc.of_framework(framework)
            if settings.stores is None or c.store in settings.stores
        ]
        self.db_pid: int | None = None
        self.redis: RedisServer | None = None
        #: The benchmark's own connection (opened by `setup`): the schema, the WAL position.
        self._admin: psycopg.Connection[Any] | None = None
        self._opened = contextlib.ExitStack()  # what `close` undoes
        #: Every measurement, in order: its key, round, attempt and result.
        self.rounds: list[dict[str, Any]] = []

    def setup(self) -> None:
        """Create the schema and the tables, and preload them; start Redis if needed."""
        s = self.settings
        if any(c.redis for c in self.contenders):
            self.redis = RedisServer()
            self._opened.callback(self.redis.stop)
            self.redis.start()
            self.say(f"{self.redis.version.split(' sha=')[0]} on {self.redis.url}, no persistence")
            self.say(f"preloading {s.rows:,} keys ({s.payload}-byte values) into Redis")
            self.redis.preload(s.rows, s.payload)
        admin = psycopg.connect(self.admin_dsn, autocommit=True)
        self._admin = self._opened.enter_context(admin)
        self.db_pid = postmaster_of(admin.info.backend_pid)
        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA))
        admin.execute(drop)
        if not s.keep:
            self._opened.callback(admin.execute, drop)
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
        command = [sys.executable, "-m", "benchmarks.web.serve", f"--migrate-django={self.dsn}"]
        done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"Django's migrate failed:\n{done.stdout}{done.stderr}")
        self.say(f"preloading {s.rows:,} sessions into django_session")
        rng = random.Random(s.seed + 1)
        columns = "django_session (session_key, session_data, expire_date)"
        with conn.cursor() as cur, cur.copy(f"COPY {columns} FROM STDIN") as copy:
            for i in range(s.rows):
                key = hashlib.sha256(f"django:{i}:{rng.random()}".encode()).hexdigest()[:32]
                copy.write_row((key, "x" * s.payload, expiry))
        conn.execute("VACUUM (ANALYZE) django_session")

    def close(self) -> None:
        """Drop the schema, unless asked to keep it; stop Redis."""
        self._opened.close()

    def plan(self) -> list[tuple[str, str, int, int, WebContender]]:
        """Every measurement: frameworks, workloads, clients, rounds, the contenders rotated."""
        s = self.settings
        steps: list[Any] = []
        for framework in s.frameworks:
            mine = [c for c in self.contenders if c.framework == framework]
            if mine:
                cells = [(framework, workload) for workload in s.workloads]
                steps += interleave(cells, s.clients, s.rounds, mine)
        return steps

    def run(self, progress: Progress) -> dict[Key, list[Load]]:
        """Run the plan; a round with a noisy sample is run once more, all contenders."""
        s = self.settings
        samples: dict[Key, list[Load]] = {}

        def one(step: tuple[Any, ...], attempt: int) -> bool:
            framework, workload, n, rnd, contender = step
            redis_url = self.redis.url if self.redis is not None and contender.redis else None
            config = AppConfig(
                self.dsn,
                TABLE,
                pool=s.pool,
                min_pool=s.min_pool,
                threads=s.threads,
                redis_url=redis_url,
            )
            with serving(contender, config) as server:  # started afresh for each measurement
                probe = Probe(self.db_pid, {"web": server.pid}, wal=self._admin)
                steps = steps_for(workload, contender.sessions)
                args = (steps, contender.sessions, n, s.warmup, s.duration, probe)
                load = asyncio.run(run_load(server.port, *args))
            processes = server.processes
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
            return noisy(load, s.max_steal, s.max_others)

        run_rounds(self.plan(), s.rounds, progress, one)
        return samples


def _meta(settings: WebSettings, source: str, dsn: str, bench: WebBench) -> dict[str, Any]:
    redis = bench.redis
    return {
        **common.run_meta("python -m benchmarks.web", source, dsn),
        "versions": {name: _version(name) for name in _VERSIONS},
        "redis_server": None if redis is None else {"version": redis.version, "url": redis.url},
        "servers": server_descriptions(settings),
        "settings": common.settings_json(
            settings,
            schema=SCHEMA,
            table=TABLE,
            workers=1,
            contenders=[c.key for c in bench.contenders],
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the web benchmark; return the exit status."""
    parser = build_parser()
    args, settings = common.parse(parser, settings_from, argv)
    missing = wc.missing_requirements(settings.frameworks)
    if missing:
        parser.error(
            f"not installed: {', '.join(missing)}; install the bench extra "
            '(pip install -e ".[bench]") or choose --frameworks'
        )
    if any(c.redis for f in settings.frameworks for c in wc.of_framework(f)) and (
        settings.stores is None or "redis" in settings.stores
    ):
        # Before anything starts: a missing redis-server fails the run, with the command
        # that installs it, rather than leaving the Redis rows out.
        find_redis_server()
    started = time.monotonic()
    try:
        with common.database(args.dsn) as (dsn, source, _):
            common.say(f"server: {source}")
            with contextlib.closing(WebBench(dsn, settings, common.say)) as bench:
                bench.setup()
                meta = _meta(settings, source, dsn, bench)
                with contextlib.closing(Progress(len(bench.plan()))) as progress:
                    samples = bench.run(progress)
    except KeyboardInterrupt:
        common.say("\ninterrupted: servers stopped, schema dropped, database stopped")
        return 130
    common.warn_leftover_threads()
    cells: list[WebCell] = summarize(samples, settings.max_steal, settings.max_others)
    _print_report(settings, meta, cells, bench, time.monotonic() - started)
    common.write_json(args.output, {"meta": meta, "results": cells, "rounds": bench.rounds})
    return 0


def _print_report(
    s: WebSettings, meta: dict[str, Any], cells: list[WebCell], bench: WebBench, elapsed: float
) -> None:
    common.print_head("sessionstore web benchmark", meta, "database")
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
        f"workloads: {', '.join(s.workloads)} of GET /count (read, increment and "
        f"store an integer in the session) and GET /read (read it only), or /ping for the "
        f"ceilings; {s.rows:,} sessions preloaded per table"
        f"{' and in Redis' if bench.redis else ''}; "
        f"{s.rounds} round(s) of {s.warmup:g} s warm-up + {s.duration:g} s; "
        f"sessionstore pools of {s.pool}; run took {elapsed:.0f} s"
    )
    print(run_noise(cells) + f" (--max-steal {s.max_steal:g}, --max-others {s.max_others:g})")
    print("\n" + format_tables(cells, s.frameworks, meta["servers"]))
