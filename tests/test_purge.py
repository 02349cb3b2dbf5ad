"""Batched purges, fleet-wide coordination, and stopping a cleanup mid-purge."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import multiprocessing
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from _support import Both, in_, insert_expired, new_token, purge_in_process, table_rows, wait_until
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore.cleanup import Cancellation, NoCleanup, TaskCleanup, ThreadCleanup
from sessionstore.testing import PostgresServer


def count(db: psycopg.Connection[Any], where: str = "true") -> int:
    row = db.execute(f"SELECT count(*) FROM sessions WHERE {where}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def pool(sessionstore_dsn: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(
        sessionstore_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}
    ) as pool:
        yield pool


@pytest.fixture
async def apool(sessionstore_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}
    ) as apool:
        yield apool


@pytest.mark.parametrize("batch_size", [1, 7, 100, 5000])
async def test_batched_purge_deletes_every_expired_session(
    store: Both, db: psycopg.Connection[Any], batch_size: int
) -> None:
    live = {new_token() for _ in range(20)}
    for token in live:
        await store.commit(token, b"live", in_(600))
    insert_expired(db, 250)
    # Many rows sharing one expiry straddle batch boundaries.
    db.execute(
        "INSERT INTO sessions SELECT 'same-' || i, '', now() - interval '1 day' "
        "FROM generate_series(1, 40) AS i"
    )
    assert await store.purge_expired(batch_size=batch_size) == 290
    assert {row[0] for row in table_rows(db)} == live


@pytest.mark.parametrize("batch_size", [0, -5, 2.5, "10", True])
async def test_bad_batch_size_is_refused_before_sql(
    store: Both, db: psycopg.Connection[Any], batch_size: object
) -> None:
    insert_expired(db, 3)
    with pytest.raises((TypeError, ValueError), match="batch_size"):
        await store.purge_expired(batch_size=batch_size)
    assert count(db) == 3


def test_purge_batch_size_option_is_validated(pool: ConnectionPool[Any]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Store(pool, cleanup=NoCleanup(), purge_batch_size=0)


def test_purge_never_deletes_a_session_a_concurrent_commit_extends(
    pool: ConnectionPool[Any], db: psycopg.Connection[Any]
) -> None:
    """Committers keep reviving expired sessions while small batches purge them."""
    pool.resize(min_size=4, max_size=4)
    store = Store(pool, cleanup=NoCleanup())
    tokens = [f"revive-{i:05d}" for i in range(3000)]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO sessions VALUES (%s, '', now() - interval '1 minute')",
            [(t,) for t in tokens],
        )
    revived: set[str] = set()
    done = threading.Event()

    def revive(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            token = rng.choice(tokens)
            store.commit(token, b"revived", in_(600))
            revived.add(token)

    committers = [threading.Thread(target=revive, args=(i,)) for i in range(3)]
    for thread in committers:
        thread.start()
    try:
        deleted = 0
        for _ in range(5):
            deleted += store.purge_expired(batch_size=50)
    finally:
        done.set()
        for thread in committers:
            thread.join()
    assert revived
    missing = [t for t in revived if store.find(t) != b"revived"]
    assert missing == []
    assert deleted + len(revived) >= len(tokens) - count(db, "expiry < now()")


def test_purge_skips_a_row_a_commit_holds_and_never_waits_for_it(
    pool: ConnectionPool[Any], db: psycopg.Connection[Any], sessionstore_dsn: str
) -> None:
    """The exact race: a commit is extending an expired row while the purge runs.

    The purge must neither delete the row nor wait for the commit's lock: it skips
    the row, finishes, and the commit then lands.
    """
    store = Store(pool, cleanup=NoCleanup())
    insert_expired(db, 10)
    db.execute("INSERT INTO sessions VALUES ('extend-me', 'kept', now() - interval '1 min')")
    result: list[int] = []
    with psycopg.connect(sessionstore_dsn) as committer:
        committer.execute(
            "UPDATE sessions SET expiry = now() + interval '1 hour' WHERE token = 'extend-me'"
        )
        # The committer's transaction stays open while the purge runs: a purge that
        # waited for its row lock would never finish here.
        purger = threading.Thread(target=lambda: result.append(store.purge_expired()))
        purger.start()
        purger.join(30)
        assert not purger.is_alive(), "the purge waited for a row lock"
        assert result == [10]
        committer.commit()
    assert store.find("extend-me") == b"kept"
    # Once nobody holds it and it has expired, the next purge takes the row.
    db.execute("UPDATE sessions SET expiry = now() - interval '1 min' WHERE token = 'extend-me'")
    assert store.purge_expired() == 1


@pytest.fixture
def purge_log(db: psycopg.Connection[Any]) -> None:
    """Log every deleted row with the deleting transaction and when it was deleted."""
    db.execute(
        "CREATE TABLE purge_log (token text, xid xid8, at timestamptz); "
        "CREATE FUNCTION log_purge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO purge_log VALUES (OLD.token, pg_current_xact_id(), clock_timestamp()); "
        "RETURN NULL; END $$; "
        "CREATE TRIGGER log_purge AFTER DELETE ON sessions FOR EACH ROW "
        "EXECUTE FUNCTION log_purge()"
    )


@pytest.mark.usefixtures("purge_log")
def test_purges_from_several_processes_take_turns_and_count_exactly(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Four processes purge one table at once, three times over.

    A batch deletes only while it holds the table's purge lock (from before its first
    row until its commit), so the deletions of two batches never interleave in time,
    and every expired row is deleted exactly once.
    """
    context = multiprocessing.get_context("spawn")
    processes = 4
    with context.Pool(processes) as workers:
        for round_ in range(1, 4):
            insert_expired(db, 20_000)
            barrier = context.Manager().Barrier(processes)
            results = workers.starmap(
                purge_in_process, [(sessionstore_dsn, barrier, 100)] * processes
            )
            assert sum(r for r in results if r is not None) == 20_000, results
            assert count(db) == 0
            logged = db.execute("SELECT count(*), count(DISTINCT token) FROM purge_log")
            assert logged.fetchone() == (20_000 * round_, 20_000 * round_)
    batches = db.execute(
        "SELECT xid, min(at), max(at) FROM purge_log GROUP BY xid ORDER BY min(at)"
    ).fetchall()
    assert len(batches) >= 3 * 200
    overlapping = [
        (earlier[0], later[0])
        for earlier, later in itertools.pairwise(batches)
        if later[1] <= earlier[2]
    ]
    assert overlapping == []


def test_a_manual_purge_skips_while_another_holds_the_lock(
    pool: ConnectionPool[Any], db: psycopg.Connection[Any]
) -> None:
    store = Store(pool, cleanup=NoCleanup())
    insert_expired(db, 5)
    key = (store._core.purge_key,)
    with psycopg.connect(db.info.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", key)
        assert store.try_purge_expired() is None
        assert store.purge_expired() == 0
        holder.execute("SELECT pg_advisory_unlock(%s)", key)
    assert store.purge_expired() == 5


async def test_a_purge_cancelled_before_it_begins_returns_zero(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    insert_expired(db, 3)
    cancel = Cancellation()
    cancel.cancel()
    assert await store.try_purge_expired(cancel=cancel) == 0
    assert count(db) == 3


@pytest.fixture
def slow_purges(db: psycopg.Connection[Any]) -> None:
    """Every DELETE on the table takes 30 s: a purge on a huge table, made quick to set up."""
    db.execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$"
    )
    db.execute("CREATE TRIGGER slow BEFORE DELETE ON sessions EXECUTE FUNCTION slow()")
    insert_expired(db, 10)


def running_deletes(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE state = 'active' AND query LIKE 'WITH lock AS%%' AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.usefixtures("slow_purges")
def test_stop_during_a_long_purge_returns_within_the_bound(
    pool: ConnectionPool[Any], db: psycopg.Connection[Any]
) -> None:
    cleanup = ThreadCleanup(interval=3600, run_on_start=True)
    store = Store(pool, cleanup=cleanup)
    wait_until(lambda: running_deletes(db) == 1)
    t0 = time.monotonic()
    store.stop_cleanup()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5
    assert not cleanup.running
    wait_until(lambda: running_deletes(db) == 0, timeout=2)  # cancelled on the server
    assert cleanup.stats.errors == 0  # a cancelled purge is not a failure
    assert count(db) == 10  # nothing half-deleted: the statement was rolled back
    db.execute("DROP TRIGGER slow ON sessions")
    assert store.purge_expired() == 10


@pytest.mark.usefixtures("slow_purges")
async def test_async_stop_during_a_long_purge_returns_within_the_bound(
    apool: AsyncConnectionPool[Any], db: psycopg.Connection[Any]
) -> None:
    cleanup = TaskCleanup(interval=3600, run_on_start=True)
    store = AsyncStore(apool, cleanup=cleanup)
    await store.open()
    for _ in range(500):
        if running_deletes(db) == 1:
            break
        await asyncio.sleep(0.02)
    assert running_deletes(db) == 1
    t0 = time.monotonic()
    await store.stop_cleanup()
    assert time.monotonic() - t0 < 1.5
    assert not cleanup.running
    assert running_deletes(db) == 0
    assert count(db) == 10
    db.execute("DROP TRIGGER slow ON sessions")
    assert await store.purge_expired() == 10


async def test_task_cleanup_stopped_from_another_thread(
    apool: AsyncConnectionPool[Any],
) -> None:
    cleanup = TaskCleanup(interval=0.01)
    store = AsyncStore(apool, cleanup=cleanup)
    await store.open()
    assert cleanup.running
    await asyncio.to_thread(cleanup.stop)
    assert not cleanup.running
    await store.aclose()


def test_cleanup_survives_a_database_outage_and_does_not_spin(
    sessionstore_server: PostgresServer,
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "sessionstore.cleanup")
    dbname = db.info.dbname
    interval = 0.2
    cleanup = ThreadCleanup(interval=interval)
    with (
        psycopg.connect(sessionstore_server.dsn, autocommit=True) as admin,
        ConnectionPool(
            sessionstore_dsn, min_size=1, max_size=1, timeout=0.5, kwargs={"autocommit": True}
        ) as outage_pool,
        Store(outage_pool, cleanup=cleanup),
    ):
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        t0 = time.monotonic()
        wait_until(lambda: cleanup.stats.errors >= 3)
        time.sleep(1)
        outage = time.monotonic() - t0
        runs_during_outage = cleanup.stats.runs
        # Each failed run waits out the pool timeout, then the interval: no spinning.
        assert runs_during_outage <= outage / interval + 1
        assert isinstance(cleanup.stats.last_error, DatabaseError)
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        with psycopg.connect(sessionstore_dsn, autocommit=True) as back:
            insert_expired(back, 3)
        wait_until(lambda: cleanup.stats.rows_deleted == 3, timeout=20)
        assert cleanup.stats.last_error is None
    assert "purge of" in caplog.text  # the failures were logged
    assert "purged 3 expired sessions" in caplog.text


def test_sweep_log_lines_never_contain_tokens(
    pool: ConnectionPool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "sessionstore")
    cleanup = ThreadCleanup(interval=0.02)
    tokens = [new_token() for _ in range(5)]
    with Store(pool, cleanup=cleanup) as store:
        for token in tokens:
            store.commit(token, b"payload-secret", in_(-1))
        wait_until(lambda: cleanup.stats.rows_deleted == 5)
    assert "purged" in caplog.text
    assert not any(token in caplog.text for token in tokens)
    assert "payload-secret" not in caplog.text


# The hammer: commits (live and already expired), deletes and purges on a few hundred
# tokens at once. Combined commits lock rows in token order, a purge picks them in
# expiry order; a purge that waited for row locks deadlocked here within seconds.
HAMMER_TOKENS = [f"hammer-{i:04d}" for i in range(400)]
HAMMER_COMMITTERS = 24
HAMMER_DELETERS = 4
HAMMER_PURGERS = 2
HAMMER_SECONDS = 8.0


def hammer_expiry(rng: random.Random) -> dt.datetime:
    """Half the commits write an expiry already past, spread so expiry order isn't token order."""
    return in_(rng.uniform(-3600, 3600))


def test_purges_commits_and_deletes_hammered_together_never_fail(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    errors: list[BaseException] = []
    purged: list[int] = []
    deadline = time.monotonic() + HAMMER_SECONDS

    def loop(seed: int, action: Callable[[random.Random], object]) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                action(rng)
        except BaseException as exc:
            errors.append(exc)

    with (
        ConnectionPool(sessionstore_dsn, min_size=8, max_size=8, kwargs={"autocommit": True}) as p,
        Store(p, cleanup=NoCleanup()) as store,
    ):
        actions: list[Callable[[random.Random], object]] = (
            [lambda r: store.commit(r.choice(HAMMER_TOKENS), b"x", hammer_expiry(r))]
            * HAMMER_COMMITTERS
            + [lambda r: store.delete(r.choice(HAMMER_TOKENS))] * HAMMER_DELETERS
            + [lambda r: purged.append(store.purge_expired(batch_size=r.randint(5, 100)))]
            * HAMMER_PURGERS
        )
        threads = [threading.Thread(target=loop, args=a) for a in enumerate(actions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(purged) > 0
        store.purge_expired()
    assert count(db, "expiry < now()") == 0


async def test_async_purges_commits_and_deletes_hammered_together_never_fail(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    purged: list[int] = []
    deadline = time.monotonic() + HAMMER_SECONDS

    async def loop(seed: int, action: Callable[[random.Random], Awaitable[object]]) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            await action(rng)

    async with (
        AsyncConnectionPool(
            sessionstore_dsn, min_size=8, max_size=8, kwargs={"autocommit": True}
        ) as p,
        AsyncStore(p, cleanup=NoCleanup()) as store,
    ):

        async def purge(r: random.Random) -> None:
            purged.append(await store.purge_expired(batch_size=r.randint(5, 100)))

        actions: list[Callable[[random.Random], Awaitable[object]]] = (
            [lambda r: store.commit(r.choice(HAMMER_TOKENS), b"x", hammer_expiry(r))]
            * HAMMER_COMMITTERS
            + [lambda r: store.delete(r.choice(HAMMER_TOKENS))] * HAMMER_DELETERS
            + [purge] * HAMMER_PURGERS
        )
        # gather() without return_exceptions raises the first error of any kind.
        await asyncio.gather(*(loop(*a) for a in enumerate(actions)))
        assert sum(purged) > 0
        await store.purge_expired()
    assert count(db, "expiry < now()") == 0
