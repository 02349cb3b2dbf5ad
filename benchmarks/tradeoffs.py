"""Durability and storage trade-offs for commits: ``python -m benchmarks.tradeoffs``.

`Store.commit` throughput on a durable throw-away PostgreSQL (fsync and synchronous
commit on), for four setups of the same table, in interleaved rounds:

- ``default``: the table as `create_table` makes it;
- ``fillfactor=70``: ``ALTER TABLE ... SET (fillfactor = 70)`` before the preload;
- ``synchronous_commit=off``: the default table, the pool's connections started with
  ``options='-c synchronous_commit=off'`` (what ``ALTER ROLE app SET
  synchronous_commit = off`` gives every connection of that role);
- ``unlogged``: ``CREATE UNLOGGED TABLE`` (no WAL; emptied after a crash).

Every round records the CPU stolen by the host and the machine's load
(`benchmarks.noise`); rounds with more than 10% steal are left out of the medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from sessionstore import Store
from sessionstore._from_dsn import create_table
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import ephemeral_postgres

from .noise import Meter, Noise

SETUPS = ("default", "fillfactor=70", "synchronous_commit=off", "unlogged")
MAX_STEAL = 0.10


def _prepare(dsn: str, setup: str, rows: int) -> str:
    """Create and preload this setup's table; return its name."""
    table = "tradeoff_" + setup.split("=")[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        if setup == "unlogged":
            conn.execute(
                f"CREATE UNLOGGED TABLE {table} (token TEXT PRIMARY KEY, data BYTEA NOT NULL, "
                "expiry TIMESTAMPTZ NOT NULL)"
            )
            conn.execute(f"CREATE INDEX {table}_expiry_idx ON {table} (expiry)")
        else:
            create_table(dsn, table)
        if setup == "fillfactor=70":
            conn.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
        conn.execute(
            f"INSERT INTO {table} SELECT 't' || g, decode(repeat('ab', 100), 'hex'), "
            "now() + interval '1 day' FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(f"VACUUM ANALYZE {table}")
    return table


def _round(dsn: str, table: str, setup: str, callers: int, seconds: float, rows: int) -> float:
    """Commits per second of `callers` threads over `seconds`."""
    options = {"options": "-c synchronous_commit=off"} if setup == "synchronous_commit=off" else {}
    size = max(1, min(callers, 16))
    with ConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True, **options}
    ) as pool:
        pool.wait()
        with Store(pool, table=table, cleanup=NoCleanup()) as store:
            payload = bytes(200)
            counts = [0] * callers
            start = time.perf_counter() + 0.3  # warm-up before counting
            stop = start + seconds

            def work(i: int) -> None:
                rng = random.Random(i)
                while (now := time.perf_counter()) < stop:
                    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
                    store.commit(f"t{rng.randint(1, rows)}", payload, expiry)
                    if now >= start:
                        counts[i] += 1

            threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    return sum(counts) / seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tradeoffs")
    parser.add_argument("--rows", type=int, default=20_000, help="rows preloaded (20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--duration", type=float, default=1.5, help="seconds counted (1.5)")
    parser.add_argument("--callers", default="1,16", help="concurrent callers (1,16)")
    args = parser.parse_args(argv)
    callers = [int(n) for n in args.callers.split(",")]
    results: dict[tuple[str, int], list[tuple[float, Noise]]] = {}
    with ephemeral_postgres(env_var=None, durable=True) as server:
        tables = {setup: _prepare(server.dsn, setup, args.rows) for setup in SETUPS}
        for n in callers:
            for round_ in range(args.rounds):
                order = SETUPS[round_ % len(SETUPS) :] + SETUPS[: round_ % len(SETUPS)]
                for setup in order:
                    meter = Meter()
                    rate = _round(server.dsn, tables[setup], setup, n, args.duration, args.rows)
                    results.setdefault((setup, n), []).append((rate, meter.read()))
                    print(f"  {setup} N={n} round {round_ + 1}: {rate:,.0f}/s", file=sys.stderr)
    print(
        f"commit throughput by table setup ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
        f"durable server, {args.rows:,} rows, 200-byte payloads, median of {args.rounds} "
        f"interleaved rounds of {args.duration:g} s; rounds with steal > {MAX_STEAL:.0%} "
        "left out)"
    )
    print("| setup | callers | commits/s | x default | steal max | machine busy |")
    print("|---|---|---|---|---|---|")
    for n in callers:
        base = _median(results[("default", n)])
        for setup in SETUPS:
            samples = results[(setup, n)]
            rate = _median(samples)
            steal = max((noise.steal or 0.0) for _, noise in samples)
            busy = statistics.median((noise.busy or 0.0) for _, noise in samples)
            print(
                f"| {setup} | {n} | {rate:,.0f} | {rate / base:.2f}x | {steal:.1%} | {busy:.0%} |"
            )
    return 0


def _median(samples: list[tuple[float, Any]]) -> float:
    kept = [rate for rate, noise in samples if not noise.noisy(MAX_STEAL)] or [
        rate for rate, _ in samples
    ]
    return statistics.median(kept)


if __name__ == "__main__":
    raise SystemExit(main())
