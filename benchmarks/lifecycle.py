"""What `touch` saves a read-mostly web request: find then touch, against find then commit.

``python -m benchmarks.lifecycle`` measures the request a session layer makes on
every page view that only reads the session but slides its expiry (Flask's
``SESSION_REFRESH_EACH_REQUEST``, starsessions' rolling sessions): a find, then
either a commit of the unchanged payload (what the integrations did) or a touch of
the expiry (what they do now). For both stores, a few concurrencies and two payload
sizes, it reports requests per second and bytes of WAL per request
(``pg_current_wal_lsn()`` before and after each measurement).

Rounds are interleaved (every cell once per round, in a shuffled order), each round
records the CPU the host stole and the machine's load, rounds over the steal threshold
are left out, and the medians of the kept rounds are printed with that noise. Compare
the ratios within one run: absolute figures move by 2x between days here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore._from_dsn import create_table
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import ephemeral_postgres

from .noise import Meter, Noise
from .workload import token

MIXES = ("find+commit", "find+touch")
FACADES = ("Store", "AsyncStore")
LIFETIME = dt.timedelta(days=1)


@dataclass(frozen=True)
class Cell:
    """One thing measured: a facade, a mix, a concurrency and a payload size."""

    facade: str
    mix: str
    callers: int
    payload: int

    def label(self) -> str:
        size = "HTTP" if self.payload == 0 else f"{self.payload} B"
        return f"{self.facade:<10} {self.mix:<11} N={self.callers:<3} {size:>7}"


@dataclass
class Result:
    """One cell in one round."""

    cell: Cell
    round: int
    requests: int
    seconds: float
    wal_bytes: int
    noise: Noise

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def load(dsn: str, rows: int, payloads: Sequence[int]) -> None:
    """One table per payload size, `rows` live sessions each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for size in payloads:
            table = f"sessions_{size}"
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            create_table(dsn, table)
            with conn.cursor() as cur, cur.copy(f'COPY "{table}" FROM STDIN') as copy:
                expiry = dt.datetime.now(dt.UTC) + LIFETIME
                for i in range(rows):
                    copy.write_row((token(i), b"x" * size, expiry))
            conn.execute(f'VACUUM ANALYZE "{table}"')


def wal_lsn(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def wal_since(conn: psycopg.Connection[Any], start: str) -> int:
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (start,)).fetchone()
    assert row is not None
    return int(row[0])


def run_threads(store: Store, cell: Cell, rows: int, warmup: float, duration: float) -> int:
    """`cell.callers` threads doing requests; returns those completed in the window."""
    start = time.perf_counter() + warmup
    end = start + duration
    counts = [0] * cell.callers
    data = b"x" * cell.payload

    def work(n: int) -> None:
        rng = random.Random(n)
        while True:
            t = token(rng.randrange(rows))
            store.find(t)
            expiry = dt.datetime.now(dt.UTC) + LIFETIME
            if cell.mix == "find+touch":
                store.touch(t, expiry)
            else:
                store.commit(t, data, expiry)
            now = time.perf_counter()
            if now >= end:
                return
            if now >= start:
                counts[n] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(cell.callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


async def run_tasks(
    store: AsyncStore, cell: Cell, rows: int, warmup: float, duration: float
) -> int:
    """`cell.callers` tasks doing requests; returns those completed in the window."""
    start = time.perf_counter() + warmup
    end = start + duration
    counts = [0] * cell.callers
    data = b"x" * cell.payload

    async def work(n: int) -> None:
        rng = random.Random(n)
        while True:
            t = token(rng.randrange(rows))
            await store.find(t)
            expiry = dt.datetime.now(dt.UTC) + LIFETIME
            if cell.mix == "find+touch":
                await store.touch(t, expiry)
            else:
                await store.commit(t, data, expiry)
            now = time.perf_counter()
            if now >= end:
                return
            if now >= start:
                counts[n] += 1

    await asyncio.gather(*(work(n) for n in range(cell.callers)))
    return sum(counts)


def measure(dsn: str, cell: Cell, rows: int, warmup: float, duration: float, round_: int) -> Result:
    table = f"sessions_{cell.payload}"
    size = min(cell.callers, 16)
    kwargs = {"autocommit": True}
    with psycopg.connect(dsn, autocommit=True) as probe:
        if cell.facade == "Store":
            with ConnectionPool(dsn, min_size=size, max_size=size, kwargs=kwargs) as pool:
                pool.wait()
                store = Store(pool, table=table, cleanup=NoCleanup())
                meter, lsn = Meter(), wal_lsn(probe)
                requests = run_threads(store, cell, rows, warmup, duration)
                noise, wal = meter.read(), wal_since(probe, lsn)
        else:

            async def go() -> tuple[int, Noise, int]:
                async with AsyncConnectionPool(
                    dsn, min_size=size, max_size=size, kwargs=kwargs
                ) as apool:
                    await apool.wait()
                    store = AsyncStore(apool, table=table, cleanup=NoCleanup())
                    meter, lsn = Meter(), wal_lsn(probe)
                    done = await run_tasks(store, cell, rows, warmup, duration)
                    return done, meter.read(), wal_since(probe, lsn)

            requests, noise, wal = asyncio.run(go())
    # The WAL of the warm-up counts too: spread it over every request made.
    made = requests * (warmup + duration) / duration
    return Result(cell, round_, requests, duration, int(wal / max(made, 1)), noise)


# The Flask integration over real HTTP: a read-only page with refresh-each-request.


def http_measure(
    dsn: str, rewrite: bool, clients: int, warmup: float, duration: float, round_: int
) -> Result:
    """Requests/s of the Flask example's read-only page, served by werkzeug.

    ``rewrite=False`` is ``/get`` as the integration serves it now (a touch);
    ``rewrite=True`` marks the unchanged session modified, which is what the
    integration did on every refresh before (a commit of the whole payload).
    """
    import http.client

    import flask
    from werkzeug.serving import make_server

    from sessionstore.examples.flask_app import create_app

    cell = Cell("Flask", "rewrite" if rewrite else "touch", clients, 0)
    with (
        psycopg.connect(dsn, autocommit=True) as probe,
        ConnectionPool(dsn, min_size=4, max_size=4, kwargs={"autocommit": True}) as pool,
    ):
        pool.wait()
        store = Store(pool, table="flask_sessions", cleanup=NoCleanup(), owners=True)
        app = create_app(store)

        @app.get("/get-rewrite")
        def get_rewrite() -> str:
            flask.session.modified = True  # "changed": saved in full, as before touch
            return str(flask.session.get("message", "")) + "\n"

        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        path = "/get-rewrite" if rewrite else "/get"
        start = time.perf_counter() + warmup
        end = start + duration
        counts = [0] * clients
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                conn.request("GET", "/put")
                reply = conn.getresponse()
                reply.read()
                cookie = reply.getheader("Set-Cookie", "").split(";", 1)[0]
                while True:
                    conn.request("GET", path, headers={"Cookie": cookie})
                    reply = conn.getresponse()
                    reply.read()
                    assert reply.status == 200, reply.status
                    now = time.perf_counter()
                    if now >= end:
                        return
                    if now >= start:
                        counts[n] += 1
            except BaseException as exc:
                errors.append(exc)

        meter, lsn = Meter(), wal_lsn(probe)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        noise, wal = meter.read(), wal_since(probe, lsn)
        server.shutdown()
        serving.join()
        if errors:
            raise errors[0]
    made = sum(counts) * (warmup + duration) / duration
    return Result(cell, round_, sum(counts), duration, int(wal / max(made, 1)), noise)


def report(results: list[Result], threshold: float) -> list[dict[str, Any]]:
    kept = [r for r in results if not r.noise.noisy(threshold)]
    rows: list[dict[str, Any]] = []
    cells = sorted({r.cell for r in results}, key=lambda c: (c.payload, c.facade, c.callers, c.mix))
    for cell in cells:
        mine = [r for r in kept if r.cell == cell]
        if not mine:
            rows.append({**asdict(cell), "rounds": 0})
            continue
        rows.append(
            {
                **asdict(cell),
                "rounds": len(mine),
                "requests_per_s": round(statistics.median(r.rate for r in mine)),
                "wal_bytes_per_request": round(statistics.median(r.wal_bytes for r in mine)),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lifecycle", description=__doc__)
    parser.add_argument(
        "--dsn", help="an existing server (its database gets the tables); default: a throw-away one"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", default="1,16", help="comma-separated (default 1,16)")
    parser.add_argument("--payloads", default="200,4096", help="bytes (default 200,4096)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--steal-threshold", type=float, default=0.10)
    parser.add_argument(
        "--http-clients",
        type=int,
        default=4,
        help="HTTP clients of the Flask page (0: leave the HTTP part out; default 4)",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    callers = [int(c) for c in args.callers.split(",")]
    payloads = [int(p) for p in args.payloads.split(",")]
    cells = [
        Cell(facade, mix, n, size)
        for facade in FACADES
        for mix in MIXES
        for n in callers
        for size in payloads
    ]
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        if args.dsn:
            dsn, source = args.dsn, "the server given by --dsn"
        else:
            server = stack.enter_context(ephemeral_postgres())
            dsn, source = server.dsn, f"{server.source}, synchronous_commit off"
        print(f"server: {source}")
        load(dsn, args.rows, payloads)
        if args.http_clients:
            create_table(dsn, "flask_sessions", owners=True)
        rng = random.Random(1)
        http_cells = [True, False] if args.http_clients else []
        for round_ in range(args.rounds):
            order: list[Cell | bool] = [*cells, *http_cells]
            rng.shuffle(order)
            for cell in order:
                if isinstance(cell, bool):
                    result = http_measure(
                        dsn, cell, args.http_clients, args.warmup, args.duration, round_
                    )
                else:
                    result = measure(dsn, cell, args.rows, args.warmup, args.duration, round_)
                results.append(result)
                flag = " (left out)" if result.noise.noisy(args.steal_threshold) else ""
                print(
                    f"round {round_ + 1} {result.cell.label()}: {result.rate:8.0f} req/s "
                    f"{result.wal_bytes:6d} B WAL/req  {result.noise.describe()}{flag}",
                    flush=True,
                )
    rows = report(results, args.steal_threshold)
    print("\nmedians of the kept rounds (requests = one find + one commit or touch):")
    for row in rows:
        if row["rounds"] == 0:
            print(
                f"  {Cell(row['facade'], row['mix'], row['callers'], row['payload']).label()}: "
                "every round left out"
            )
            continue
        print(
            f"  {Cell(row['facade'], row['mix'], row['callers'], row['payload']).label()}: "
            f"{row['requests_per_s']:8d} req/s  {row['wal_bytes_per_request']:6d} B WAL/req  "
            f"({row['rounds']} rounds)"
        )
    by_key = {(r["facade"], r["callers"], r["payload"], r["mix"]): r for r in rows if r["rounds"]}
    touch = by_key.get(("Flask", args.http_clients, 0, "touch"))
    rewrite = by_key.get(("Flask", args.http_clients, 0, "rewrite"))
    if touch and rewrite:
        speed = touch["requests_per_s"] / rewrite["requests_per_s"]
        wal = touch["wal_bytes_per_request"] / max(rewrite["wal_bytes_per_request"], 1)
        print(
            f"\nFlask read-only page, refresh each request, {args.http_clients} clients: "
            f"touch {speed:.2f}x the requests/s of the full rewrite, {wal:.2f}x its WAL"
        )
    print("\ntouch against commit (same run):")
    for facade in FACADES:
        for n in callers:
            for size in payloads:
                touch = by_key.get((facade, n, size, "find+touch"))
                commit = by_key.get((facade, n, size, "find+commit"))
                if touch and commit:
                    speed = touch["requests_per_s"] / commit["requests_per_s"]
                    wal = touch["wal_bytes_per_request"] / max(commit["wal_bytes_per_request"], 1)
                    where = f"{facade:<10} N={n:<3} {size:>5} B"
                    print(f"  {where}: {speed:.2f}x requests/s, {wal:.2f}x WAL")
    if args.json:
        payload = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "args": vars(args),
            "results": rows,
            "rounds": [
                {
                    **asdict(r.cell),
                    "round": r.round,
                    "requests_per_s": round(r.rate),
                    "wal_bytes_per_request": r.wal_bytes,
                    **asdict(r.noise),
                }
                for r in results
            ],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
