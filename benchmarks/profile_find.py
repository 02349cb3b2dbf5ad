"""Where a find's client CPU goes: ``python -m benchmarks.profile_find``.

One caller, one connection, the same preloaded table as the benchmark. For each way
of running the find statement it reports the client's CPU time per find (process CPU
over the calls, so it includes libpq and the pool's bookkeeping) and the wall time per
find; then a cProfile of `Store.find` and of the raw pattern, sorted by own time.

The variants go from the plain pattern down to libpq itself, so each step shows what
one layer costs:

- ``raw``: ``with pool.connection() as conn: conn.execute(sql, (t,)).fetchone()``.
- ``Store.find``: the store as it is.
- ``getconn/putconn``: the raw pattern without the context manager.
- ``getconn + binary cursor + prepare=True``: what a store can do on a pool.
- ``no pool, conn.execute``: psycopg's own cost per statement.
- ``no pool, reused cursor, prepare=True``: one cursor kept per connection.
- ``libpq exec_prepared``: psycopg's `pgconn` directly (the floor for Python).
- and the asyncio counterparts of the first three.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import pstats
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore._from_dsn import create_table
from sessionstore.cleanup import NoCleanup

from .cli import database
from .workload import Table, token

_STMT = b"bench_find"


Row = tuple[str, float, float, float]  # name, min CPU us/op, median CPU us/op, median wall


def _per_op(calls: int, run: Callable[[int], object]) -> tuple[float, float]:
    """Run `run(i)` for i in range(calls); return (CPU us, wall us) per call."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(calls):
        run(i)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / calls * 1e6, wall / calls * 1e6


async def _per_op_async(calls: int, run: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(calls):
        await run(i)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / calls * 1e6, wall / calls * 1e6


def _summary(results: dict[str, list[tuple[float, float]]]) -> list[Row]:
    return [
        (
            name,
            min(cpu for cpu, _ in runs),
            statistics.median(cpu for cpu, _ in runs),
            statistics.median(wall for _, wall in runs),
        )
        for name, runs in results.items()
    ]


def sync_variants(
    dsn: str, table: Table, tokens: Sequence[str], calls: int, rounds: int
) -> list[Row]:
    """Measure the sync variants, interleaved in rounds."""
    n = len(tokens)
    find_sql = table.find_sql
    with (
        ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True) as pool,
        Store(pool, table=table.name, cleanup=NoCleanup()) as store,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        pool.wait()

        def raw(i: int) -> object:
            with pool.connection() as conn:
                return conn.execute(find_sql, (tokens[i % n],)).fetchone()

        def store_find(i: int) -> object:
            return store.find(tokens[i % n])

        def getconn(i: int) -> object:
            conn = pool.getconn()
            try:
                return conn.execute(find_sql, (tokens[i % n],)).fetchone()
            finally:
                pool.putconn(conn)

        def getconn_binary(i: int) -> object:
            conn = pool.getconn()
            try:
                cur = conn.cursor(binary=True)
                return cur.execute(find_sql, (tokens[i % n],), prepare=True).fetchone()
            finally:
                pool.putconn(conn)

        def direct(i: int) -> object:
            return conn.execute(find_sql, (tokens[i % n],)).fetchone()

        cursor = conn.cursor(binary=True)

        def reused(i: int) -> object:
            return cursor.execute(find_sql, (tokens[i % n],), prepare=True).fetchone()

        pgconn = conn.pgconn
        pgconn.prepare(_STMT, find_sql.replace("%s", "$1").encode(), [25])  # 25: text
        encoded = [t.encode() for t in tokens]

        def libpq(i: int) -> object:
            res = pgconn.exec_prepared(_STMT, [encoded[i % n]], result_format=pq.Format.BINARY)
            return res.get_value(0, 0) if res.ntuples else None

        variants: dict[str, Callable[[int], object]] = {
            "raw pattern (pool.connection, text)": raw,
            "Store.find": store_find,
            "getconn/putconn, conn.execute": getconn,
            "getconn/putconn, binary cursor, prepare=True": getconn_binary,
            "no pool, conn.execute": direct,
            "no pool, reused binary cursor, prepare=True": reused,
            "libpq exec_prepared via psycopg.pq (floor)": libpq,
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for fn in variants.values():  # warm up: prepare statements, fill caches
            _per_op(200, fn)
        for _ in range(rounds):
            for name, fn in variants.items():
                results[name].append(_per_op(calls, fn))
    return _summary(results)


async def async_variants(
    dsn: str, table: Table, tokens: Sequence[str], calls: int, rounds: int
) -> list[Row]:
    """Measure the asyncio variants, interleaved in rounds."""
    n = len(tokens)
    find_sql = table.find_sql
    async with AsyncConnectionPool(
        dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.wait()
        store = AsyncStore(pool, table=table.name, cleanup=NoCleanup())

        async def raw(i: int) -> object:
            async with pool.connection() as conn:
                cur = await conn.execute(find_sql, (tokens[i % n],))
                return await cur.fetchone()

        async def store_find(i: int) -> object:
            return await store.find(tokens[i % n])

        async def getconn(i: int) -> object:
            conn = await pool.getconn()
            try:
                cur = conn.cursor(binary=True)
                await cur.execute(find_sql, (tokens[i % n],), prepare=True)
                return await cur.fetchone()
            finally:
                await pool.putconn(conn)

        variants: dict[str, Callable[[int], Awaitable[object]]] = {
            "async raw pattern": raw,
            "AsyncStore.find": store_find,
            "async getconn/putconn, binary cursor, prepare=True": getconn,
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for fn in variants.values():
            await _per_op_async(200, fn)
        for _ in range(rounds):
            for name, fn in variants.items():
                results[name].append(await _per_op_async(calls, fn))
        await store.aclose()
    return _summary(results)


def profile(dsn: str, table: Table, tokens: Sequence[str], calls: int, top: int) -> str:
    """cProfile `Store.find` and the raw pattern; return the reports."""
    n = len(tokens)
    out = io.StringIO()
    with ConnectionPool(
        dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True
    ) as pool:
        pool.wait()
        store = Store(pool, table=table.name, cleanup=NoCleanup())
        find_sql = table.find_sql

        def raw(token: str) -> object:
            with pool.connection() as conn:
                return conn.execute(find_sql, (token,)).fetchone()

        for name, fn in (("Store.find", store.find), ("raw pattern", raw)):
            for i in range(200):
                fn(tokens[i % n])
            # CPU time, not wall time: waiting for the server is not client work.
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            for i in range(calls):
                fn(tokens[i % n])
            profiler.disable()
            out.write(f"\n=== cProfile (CPU time): {calls:,} x {name}, sorted by own time ===\n")
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(top)
        store.close()
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the profile; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_find")
    parser.add_argument("--dsn", help="PostgreSQL to use (default: a throw-away one)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows preloaded (10,000)")
    parser.add_argument("--calls", type=int, default=3_000, help="finds per variant per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument("--top", type=int, default=25, help="cProfile lines shown (25)")
    parser.add_argument("--table", default="bench_profile", help="the table (bench_profile)")
    args = parser.parse_args(argv)
    table = Table(args.table)
    with database(args.dsn) as (dsn, source, _):
        print(f"server: {source}", file=sys.stderr)
        with psycopg.connect(dsn, autocommit=True) as admin:
            table.drop(admin)
            try:
                create_table(dsn, table.name)
                rng = random.Random(1)
                expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
                table.preload(admin, 0, args.rows, 200, expiry, rng)
                table.vacuum(admin, analyze=True)
                tokens = [token(i) for i in range(args.rows)]
                rng.shuffle(tokens)
                rows = sync_variants(dsn, table, tokens, args.calls, args.rounds)
                rows += asyncio.run(async_variants(dsn, table, tokens, args.calls, args.rounds))
                report = profile(dsn, table, tokens, args.calls, args.top)
            finally:
                table.drop(admin)
    width = max(len(r[0]) for r in rows)
    print(
        f"client CPU and wall time per find, N=1: {args.rounds} interleaved rounds of "
        f"{args.calls:,} calls per variant (min is the best estimate on a busy machine)"
    )
    print(f"  {'variant'.ljust(width)}  CPU us/op min  median  wall us/op median")
    for name, cpu_min, cpu_median, wall in rows:
        print(f"  {name.ljust(width)}  {cpu_min:13.1f}  {cpu_median:6.1f}  {wall:16.1f}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
