"""asyncio cancellation: of a find, of a commit waiting on a lock, of a wait for the pool.

After each, nothing is half-written (a cancelled commit is all or nothing, and never
lands after the caller was told it was cancelled), no connection is lost or left in
a transaction, and the next call works.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from _support import in_, new_token, table_rows
from psycopg_pool import AsyncConnectionPool

from sessionstore import AsyncStore
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import PostgresServer, TcpProxy

POOL_SIZE = 2


@pytest.fixture(params=[True, False], ids=["autocommit", "transactional"])
async def apool(
    request: pytest.FixtureRequest, sessionstore_dsn: str
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A full pool, autocommit or psycopg's default (a transaction around each statement)."""
    async with AsyncConnectionPool(
        sessionstore_dsn,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        timeout=5,
        kwargs={"autocommit": request.param},
    ) as pool:
        await pool.wait()
        yield pool


async def assert_pool_full_and_healthy(pool: AsyncConnectionPool[Any], store: AsyncStore) -> None:
    """Every connection is back, idle, outside any transaction, and works."""

    # A connection closed by a cancellation is replaced in the background: allow it.
    async def full() -> bool:
        return bool(pool.get_stats()["pool_available"] == POOL_SIZE)

    await wait_for(full)
    stats = pool.get_stats()
    assert stats["requests_waiting"] == 0
    assert stats["pool_size"] == POOL_SIZE
    # Borrow every connection at once: each must be usable and idle.
    async with asyncio.timeout(10):
        conns = [await pool.getconn() for _ in range(POOL_SIZE)]
    try:
        for conn in conns:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            await conn.execute("SELECT 1")
    finally:
        for conn in conns:
            await pool.putconn(conn)
    token = new_token()
    await store.commit(token, b"after", in_(60))
    assert await store.find(token) == b"after"


async def waiting_on_lock(db: psycopg.Connection[Any], fragment: str) -> bool:
    """Whether a backend is running a statement containing `fragment` and waiting on a lock."""
    row = await asyncio.to_thread(
        lambda: db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND state = 'active' AND query LIKE %s",
            (f"%{fragment}%",),
        ).fetchone()
    )
    return bool(row and row[0])


async def wait_for(predicate: Any, attempts: int = 250) -> None:
    """Await an async predicate until it is true (polling every 20 ms)."""
    for _ in range(attempts):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_cancelled_find_leaves_the_pool_healthy(
    apool: AsyncConnectionPool[Any], sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    store = AsyncStore(apool, cleanup=NoCleanup())
    token = new_token()
    await store.commit(token, b"data", in_(60))
    with psycopg.connect(sessionstore_dsn) as locker:
        locker.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")  # find has to wait
        task = asyncio.create_task(store.find(token))
        await wait_for(lambda: waiting_on_lock(db, "SELECT data FROM"))
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 2  # the query was cancelled on the server
        assert not await waiting_on_lock(db, "SELECT data FROM")
        locker.rollback()
    await assert_pool_full_and_healthy(apool, store)
    assert await store.find(token) == b"data"


@pytest.mark.parametrize("existing", [True, False], ids=["update", "insert"])
async def test_cancelled_commit_waiting_on_a_row_lock_writes_nothing(
    apool: AsyncConnectionPool[Any],
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
    existing: bool,
) -> None:
    """The commit is cancelled on the server: it neither half-writes nor lands later."""
    store = AsyncStore(apool, cleanup=NoCleanup())
    token = new_token()
    if existing:
        await store.commit(token, b"old", in_(60))
    before = table_rows(db)
    with psycopg.connect(sessionstore_dsn) as locker:
        if existing:  # another transaction holds the row
            locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (token,))
        else:  # another transaction inserted the same token, not yet committed
            locker.execute(
                "INSERT INTO sessions VALUES (%s, 'theirs', now() + interval '1 hour')", (token,)
            )
        task = asyncio.create_task(store.commit(token, b"new", in_(60)))
        await wait_for(lambda: waiting_on_lock(db, "INSERT INTO"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        locker.rollback()  # the lock goes away; a commit still queued would now land
    await asyncio.sleep(0.3)
    assert table_rows(db) == before
    await assert_pool_full_and_healthy(apool, store)
    assert await store.find(token) == (b"old" if existing else None)


async def test_cancelled_wait_for_a_pool_connection_leaks_nothing(
    apool: AsyncConnectionPool[Any],
) -> None:
    store = AsyncStore(apool, cleanup=NoCleanup())
    token = new_token()
    await store.commit(token, b"data", in_(60))
    held = [await apool.getconn() for _ in range(POOL_SIZE)]  # the pool is exhausted
    task = asyncio.create_task(store.find(token))
    for _ in range(100):
        if apool.get_stats()["requests_waiting"] == 1:
            break
        await asyncio.sleep(0.01)
    assert apool.get_stats()["requests_waiting"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The pool keeps the cancelled request in its queue until a connection comes
    # back, then skips it: the returned connection must not be handed to it and lost.
    for conn in held:
        await apool.putconn(conn)
    await assert_pool_full_and_healthy(apool, store)


async def test_cancellation_racing_a_returned_connection_loses_none(
    apool: AsyncConnectionPool[Any],
) -> None:
    """A connection handed to a waiter in the same instant it is cancelled stays in the pool."""
    store = AsyncStore(apool, cleanup=NoCleanup())
    token = new_token()
    await store.commit(token, b"data", in_(60))
    rng = random.Random(1234)
    for _ in range(30):
        held = [await apool.getconn() for _ in range(POOL_SIZE)]
        waiters = [asyncio.create_task(store.find(token)) for _ in range(3)]
        await asyncio.sleep(0.005)
        # Return the connections and cancel the waiters in one step of the loop, in a
        # random order, so some waiters are cancelled just after being served.
        steps: list[Any] = [*((apool.putconn, c) for c in held), *((w.cancel,) for w in waiters)]
        rng.shuffle(steps)
        for step in steps:
            result = step[0](*step[1:])
            if asyncio.iscoroutine(result):
                await result
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        for outcome in outcomes:
            assert outcome == b"data" or isinstance(outcome, asyncio.CancelledError)
    await assert_pool_full_and_healthy(apool, store)


@pytest.mark.slow
async def test_cancel_at_any_point_of_a_slow_round_trip(
    sessionstore_server: PostgresServer, sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Cancel commits at random moments of a 0.1 s-each-way round trip.

    Each cancelled commit is all or nothing: the row always holds one of the values
    written, whole; and the pool ends full and healthy.
    """
    rng = random.Random(42)
    token = new_token()
    with TcpProxy(sessionstore_server.host, sessionstore_server.port) as proxy:
        async with AsyncConnectionPool(
            proxy.dsn(sessionstore_dsn),
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            timeout=10,
            kwargs={"autocommit": True},
        ) as pool:
            await pool.wait()
            store = AsyncStore(pool, cleanup=NoCleanup())
            await store.commit(token, b"v0" * 1000, in_(60))
            written = {b"v0" * 1000}
            proxy.delay(0.1)
            for n in range(1, 16):
                value = (b"v%d" % n) * 1000
                written.add(value)
                task = asyncio.create_task(store.commit(token, value, in_(60)))
                await asyncio.sleep(rng.uniform(0.0, 0.25))
                task.cancel()  # may come after the commit finished: that's fine too
                (outcome,) = await asyncio.gather(task, return_exceptions=True)
                assert outcome is None or isinstance(outcome, asyncio.CancelledError)
                ((_, data, _),) = table_rows(db)
                assert data in written
            proxy.passthrough()
            await assert_pool_full_and_healthy(pool, store)
