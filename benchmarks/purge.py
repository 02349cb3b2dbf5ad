"""Purge benchmark: batched purges against one DELETE, on tables with live sessions too.

Run from the repository root::

    python -m benchmarks.purge                      # 100k and 1M expired rows
    python -m benchmarks.purge --sizes 100000 --dsn postgresql://...

For each size the table is loaded with that many expired sessions beside 100,000 live
ones (``--live``), vacuumed and analysed, and then purged by each method in turn:

- ``single DELETE``: the Go original's ``DELETE ... WHERE expiry < current_timestamp``;
- ``store, batch N``: `Store.purge_expired` (batches that walk the expiry index);
- ``naive LIMIT, batch N``: the plain batch loop (``token IN (SELECT ... LIMIT n FOR
  UPDATE SKIP LOCKED)``), at the smallest size only. The planner runs its subquery as a
  sequential scan with a LIMIT, so every batch re-reads the live rows and the total
  grows with the square of the table: measured on the project's 2-core machines, 100k
  expired beside 100k live took 3.9 s in batches of 1,000 against 0.28 s for one DELETE
  (docs/cleanup.md, "Measured", has this benchmark's own run).

The longest single batch of the store's purge is timed by running the core's own batch
statements one by one (the same SQL `Store.purge_expired` runs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from sessionstore import Store
from sessionstore._core import Result, SessionCore
from sessionstore._from_dsn import create_table
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import ephemeral_postgres

SINGLE_DELETE = "DELETE FROM sessions WHERE expiry < current_timestamp"
NAIVE_BATCH = (
    "DELETE FROM sessions WHERE token IN (SELECT token FROM sessions "
    "WHERE expiry < current_timestamp LIMIT %s FOR UPDATE SKIP LOCKED)"
)


def load(conn: psycopg.Connection[Any], expired: int, live: int) -> None:
    """Fill the table afresh: `expired` sessions spread over the past day, `live` ahead."""
    conn.execute("TRUNCATE sessions")
    conn.execute(
        "INSERT INTO sessions SELECT 'e' || i || md5(i::text), decode(repeat('ab', 100), 'hex'), "
        "now() - interval '1 minute' - (i %% 86400) * interval '1 s' "
        "FROM generate_series(1, %s) AS i",
        (expired,),
    )
    conn.execute(
        "INSERT INTO sessions SELECT 'l' || i || md5(i::text), decode(repeat('ab', 100), 'hex'), "
        "now() + interval '1 day' + (i %% 86400) * interval '1 s' "
        "FROM generate_series(1, %s) AS i",
        (live,),
    )
    conn.execute("VACUUM ANALYZE sessions")


def timed_batches(conn: psycopg.Connection[Any], core: SessionCore, batch: int) -> list[float]:
    """Run the store's batch statements one by one; return each one's duration."""
    steps = core.purge_steps(batch)
    durations: list[float] = []
    statement = next(steps)
    while True:
        t0 = time.perf_counter()
        rows = conn.execute(statement.query, statement.params).fetchall()
        durations.append(time.perf_counter() - t0)
        try:
            statement = steps.send(Result(rows, len(rows)))
        except StopIteration:
            return durations


def naive(conn: psycopg.Connection[Any], batch: int) -> list[float]:
    """The LIMIT batch loop without an index order."""
    durations: list[float] = []
    while True:
        t0 = time.perf_counter()
        deleted = conn.execute(NAIVE_BATCH, (batch,)).rowcount
        durations.append(time.perf_counter() - t0)
        if deleted < batch:
            return durations


def measure(
    conn: psycopg.Connection[Any], size: int, live: int, method: str, purge: Any
) -> dict[str, Any]:
    """Load the table, purge it with `purge` (returns statement durations), check, report."""
    load(conn, size, live)
    t0 = time.perf_counter()
    statement_times: list[float] | None = purge()
    total = time.perf_counter() - t0
    left = conn.execute(
        "SELECT count(*) FILTER (WHERE expiry < now()), count(*) FROM sessions"
    ).fetchone()
    assert left == (0, live), f"{method} left {left}"
    row = {
        "expired": size,
        "live": live,
        "method": method,
        "seconds": round(total, 3),
        "statements": None if statement_times is None else len(statement_times),
        "longest_statement_s": None if statement_times is None else round(max(statement_times), 4),
    }
    print(_format(row), flush=True)
    return row


def run(dsn: str, sizes: Sequence[int], live: int, batches: Sequence[int]) -> list[dict[str, Any]]:
    """Measure every method at every size; return one row per measurement."""
    results: list[dict[str, Any]] = []
    core = SessionCore()
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool,
    ):
        create_table(dsn)
        store = Store(pool, cleanup=NoCleanup())
        for size in sizes:
            results.append(
                measure(
                    conn,
                    size,
                    live,
                    "single DELETE (Go original)",
                    lambda: [_timed(lambda: conn.execute(SINGLE_DELETE))],
                )
            )
            for batch in batches:
                results.append(
                    measure(
                        conn,
                        size,
                        live,
                        f"store.purge_expired, batch {batch}",
                        lambda b=batch: _store(store, b),
                    )
                )
                results.append(
                    measure(
                        conn,
                        size,
                        live,
                        f"same, statement by statement, batch {batch}",
                        lambda b=batch: timed_batches(conn, core, b),
                    )
                )
            if size == min(sizes):
                for batch in batches:
                    results.append(
                        measure(
                            conn,
                            size,
                            live,
                            f"naive LIMIT, batch {batch}",
                            lambda b=batch: naive(conn, b),
                        )
                    )
    return results


def _timed(action: Any) -> float:
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


def _store(store: Store, batch: int) -> None:
    """The store's purge as users call it (its statements are not visible from here)."""
    store.purge_expired(batch_size=batch)


def _format(row: dict[str, Any]) -> str:
    text = f"{row['expired']:>9,} expired + {row['live']:,} live  {row['method']:<44}"
    text += f"{row['seconds']:>8.2f} s"
    if row["statements"] is not None:
        text += f"  {row['statements']:>5} statements, longest "
        text += f"{row['longest_statement_s'] * 1000:8.1f} ms"
    return text


@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with ephemeral_postgres(env_var="SESSIONSTORE_DSN", durable=True) as server:
        print(f"server: {server.source}", flush=True)
        yield server.dsn


def main(argv: Sequence[str] | None = None) -> int:
    """Run the purge benchmark from the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.purge", description=__doc__)
    parser.add_argument("--dsn", help="server to use (default: a throw-away durable one)")
    parser.add_argument("--sizes", default="100000,1000000", help="expired rows per run")
    parser.add_argument("--live", type=int, default=100_000, help="live rows beside them")
    parser.add_argument("--batches", default="1000,5000,10000", help="batch sizes to compare")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    print(f"purge benchmark {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    with _server(args.dsn) as dsn:
        results = run(dsn, sizes, args.live, batches)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
