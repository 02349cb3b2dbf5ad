"""Concurrent calls combined into shared statements: same answers, isolated failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from _support import in_, new_token, table_rows
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore._concurrency import ALONE, Depth
from sessionstore._core import SessionCore, Statement
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import TcpProxy


def test_commit_many_keeps_the_last_write_per_token_in_lock_order() -> None:
    core = SessionCore()
    late = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    commits = [
        core.commit("b", b"first", late),
        core.commit("a", memoryview(b"only"), late),
        core.commit("b", bytearray(b"second"), late),
    ]
    statement = core.commit_many(commits)
    assert statement.params == (["a", "b"], [b"only", b"second"], [late, late])


def test_find_many_gives_each_find_its_own_answer() -> None:
    core = SessionCore()
    finds = [core.find("a"), core.find("missing"), core.find("a")]
    assert core.find_many(finds).params == (["a", "missing", "a"],)
    assert core.decode_find_many(finds, [("a", b"x")]) == [b"x", None, b"x"]


def count_calls(batcher: Any) -> list[int]:
    """Count a batcher's combined-statement calls (a spy: the real one still runs)."""
    calls = [0]
    real = batcher._combined

    def spy(statements: Sequence[Statement]) -> Any:
        calls[0] += 1
        return real(statements)

    batcher._combined = spy
    return calls


def test_many_threads_get_their_own_results_through_combined_statements(
    sessionstore_dsn: str,
) -> None:
    with ConnectionPool(
        sessionstore_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}
    ) as pool:
        store = Store(pool, cleanup=NoCleanup())
        combined = count_calls(store._commits)
        combined_finds = count_calls(store._finds)
        errors: list[BaseException] = []
        barrier = threading.Barrier(32)

        def work(i: int) -> None:
            token = f"thread-{i}"
            barrier.wait()
            try:
                for round_ in range(20):
                    store.commit(token, f"{i}:{round_}".encode(), in_(60))
                    assert store.find(token) == f"{i}:{round_}".encode()
                    assert store.find(f"missing-{i}") is None
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert store.all() == {f"thread-{i}": f"{i}:19".encode() for i in range(32)}
    assert combined[0] > 0  # calls were combined...
    assert combined_finds[0] > 0
    assert combined[0] < 32 * 20  # ...into fewer statements than calls


def test_a_failing_call_in_a_combined_commit_fails_alone(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """One row locked elsewhere: only its caller gets the error."""
    locked = new_token()
    db.execute("INSERT INTO sessions VALUES (%s, 'old', now() + interval '1 hour')", (locked,))
    with (
        ConnectionPool(
            sessionstore_dsn,
            min_size=2,
            max_size=2,
            kwargs={"autocommit": True, "options": "-c lock_timeout=300ms"},
        ) as pool,
        psycopg.connect(sessionstore_dsn) as locker,
    ):
        store = Store(pool, cleanup=NoCleanup())
        combined = count_calls(store._commits)
        locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (locked,))
        outcomes: dict[str, BaseException | None] = {}
        tokens = [locked, *(new_token() for _ in range(15))]
        barrier = threading.Barrier(len(tokens))

        def commit(token: str) -> None:
            barrier.wait()
            try:
                store.commit(token, b"new", in_(60))
                outcomes[token] = None
            except BaseException as exc:  # collected and asserted below
                outcomes[token] = exc

        threads = [threading.Thread(target=commit, args=(t,)) for t in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        locker.rollback()
    failed = {token: exc for token, exc in outcomes.items() if exc is not None}
    assert list(failed) == [locked]
    assert isinstance(failed[locked], DatabaseError)
    assert isinstance(failed[locked].__cause__, psycopg.errors.LockNotAvailable)
    assert combined[0] > 0
    rows = {row[0]: row[1] for row in table_rows(db)}
    assert rows[locked] == b"old"
    assert all(rows[token] == b"new" for token in tokens[1:])


async def test_async_many_tasks_get_their_own_results(sessionstore_dsn: str) -> None:
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=2, max_size=4, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        combined = count_calls(store._finds)

        async def work(i: int) -> None:
            for round_ in range(10):
                await store.commit(f"task-{i}", f"{i}:{round_}".encode(), in_(60))
                assert await store.find(f"task-{i}") == f"{i}:{round_}".encode()

        await asyncio.gather(*(work(i) for i in range(64)))
        assert await store.all() == {f"task-{i}": f"{i}:9".encode() for i in range(64)}
    assert combined[0] > 0


async def test_async_cancellation_of_queued_and_leading_calls(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Cancelling a queued call drops it; cancelling a lane holder hands its batch on."""
    blocker = "blocked-row"
    db.execute("INSERT INTO sessions VALUES (%s, 'old', now() + interval '1 hour')", (blocker,))
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        locker = await psycopg.AsyncConnection.connect(sessionstore_dsn)
        await locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (blocker,))

        def commit(token: str) -> asyncio.Task[None]:
            return asyncio.create_task(store.commit(token, b"new", in_(60)))

        lane1, lane2 = commit(blocker), commit(blocker)  # both lanes wait on the lock
        await asyncio.sleep(0.2)
        dropped = commit("dropped")  # queued
        leader, follower_a, follower_b = commit("leader"), commit("a"), commit(blocker)
        await asyncio.sleep(0.1)
        dropped.cancel()  # cancelled while queued: must never be written
        lane1.cancel()  # frees a lane: "leader" serves [leader, a, blocker] and blocks
        await asyncio.sleep(0.3)
        leader.cancel()  # cancelled mid-batch: a and blocker must still be served
        await asyncio.sleep(0.1)
        await locker.rollback()
        await locker.close()
        done, pending = await asyncio.wait(
            {lane2, follower_a, follower_b}, timeout=10, return_when=asyncio.ALL_COMPLETED
        )
        assert pending == set()
        for task in done:
            assert task.exception() is None
        for task in (dropped, lane1, leader):
            assert task.cancelled()
        token = new_token()
        await store.commit(token, b"after", in_(60))  # the lanes were not lost
        assert await store.find(token) == b"after"
        stats = apool.get_stats()
        assert stats.get("pool_size", 0) == 4
    rows = {row[0]: row[1] for row in table_rows(db)}
    assert "dropped" not in rows
    assert rows["a"] == b"new"
    assert rows[blocker] == b"new"


def lock_waiters(db: psycopg.Connection[Any]) -> int:
    """How many backends wait for a row lock (the store's statements held in flight)."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for(condition: Any, what: str) -> None:
    """Poll `condition` (a failure guard of 10 s, not a timing assertion)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_threads_run_up_to_alone_single_calls_at_once(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """ALONE threads, a pool of that size: all their statements at the server, none queued."""
    blocker = new_token()
    db.execute("INSERT INTO sessions VALUES (%s, 'old', now() + interval '1 hour')", (blocker,))
    with (
        ConnectionPool(
            sessionstore_dsn, min_size=ALONE, max_size=ALONE, kwargs={"autocommit": True}
        ) as pool,
        psycopg.connect(sessionstore_dsn) as locker,
    ):
        store = Store(pool, cleanup=NoCleanup())
        locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (blocker,))
        threads = [
            threading.Thread(target=store.commit, args=(blocker, f"{i}".encode(), in_(60)))
            for i in range(ALONE)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: lock_waiters(db) == ALONE, "the single commits did not reach the server")
        assert len(store._commits._queue) == 0
        locker.rollback()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
    assert lock_waiters(db) == 0


async def test_async_runs_at_most_two_calls_alone_and_queues_the_rest(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """On asyncio, calls beyond the lanes queue for one combined statement."""
    blocker = new_token()
    db.execute("INSERT INTO sessions VALUES (%s, 'old', now() + interval '1 hour')", (blocker,))
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        locker = await psycopg.AsyncConnection.connect(sessionstore_dsn)
        await locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (blocker,))
        tasks = [
            asyncio.create_task(store.commit(blocker, f"{i}".encode(), in_(60))) for i in range(4)
        ]
        deadline = time.monotonic() + 10
        while len(store._commits._queue) < 2 or lock_waiters(db) < 2:
            assert time.monotonic() < deadline, "two commits did not queue behind two at the server"
            await asyncio.sleep(0.01)
        assert lock_waiters(db) == 2
        assert len(store._commits._queue) == 2
        await locker.rollback()
        await locker.close()
        await asyncio.gather(*tasks)
        assert await store.find(blocker) in {f"{i}".encode() for i in range(4)}


def test_a_pool_without_autocommit_is_told_once_what_it_costs(
    sessionstore_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with ConnectionPool(sessionstore_dsn, min_size=1, max_size=1, name="no-autocommit") as pool:
        store = Store(pool, cleanup=NoCleanup())
        token = new_token()
        with caplog.at_level(logging.WARNING, logger="sessionstore"):
            store.commit(token, b"x", in_(60))
            assert store.find(token) == b"x"
            store.delete(token)
        told = [r for r in caplog.records if "autocommit" in r.getMessage()]
        assert len(told) == 1
        assert "'no-autocommit'" in told[0].getMessage()
        assert '"autocommit": True' in told[0].getMessage()
        assert token not in caplog.text


async def test_async_pool_without_autocommit_is_told_once(
    sessionstore_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncConnectionPool(sessionstore_dsn, min_size=1, max_size=1) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        with caplog.at_level(logging.WARNING, logger="sessionstore"):
            for _ in range(3):
                assert await store.find(new_token()) is None
        assert len([r for r in caplog.records if "autocommit" in r.getMessage()]) == 1
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=1, max_size=1, kwargs={"autocommit": True}
    ) as apool:
        caplog.clear()
        store = AsyncStore(apool, cleanup=NoCleanup())
        with caplog.at_level(logging.WARNING, logger="sessionstore"):
            assert await store.find(new_token()) is None
        assert "autocommit" not in caplog.text


#: Through the proxy at this delay each way, a round trip holds far more statements
#: than the tests' pools have connections: the client spends well under a millisecond
#: of CPU per statement.
SLOW_NETWORK = 0.02

#: Rounds of concurrent finds enough to fill `Depth.WINDOW` statements many times
#: over, whether they run singly or combined.
MEASURING_ROUNDS = 8 * Depth.WINDOW // 2


def test_threads_through_a_slow_network_send_a_statement_per_connection(
    sessionstore_proxy: TcpProxy,
    sessionstore_proxy_dsn: str,
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    """Where the round trip is long, no call waits for a lane while connections are free."""
    size = 2 * ALONE
    blocker = new_token()
    db.execute("INSERT INTO sessions VALUES (%s, 'old', now() + interval '1 hour')", (blocker,))
    sessionstore_proxy.delay(SLOW_NETWORK)
    with (
        ConnectionPool(
            sessionstore_proxy_dsn, min_size=size, max_size=size, kwargs={"autocommit": True}
        ) as pool,
        psycopg.connect(sessionstore_dsn) as locker,
    ):
        store = Store(pool, cleanup=NoCleanup())
        depth = store._commits._lanes._depth  # one per store: finds measure it for commits
        for _ in range(MEASURING_ROUNDS):  # the first window of statements measures it
            if depth() >= size:
                break
            threads = [threading.Thread(target=store.find, args=(blocker,)) for _ in range(size)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert depth() >= size, f"a {SLOW_NETWORK * 2:.2f} s round trip measured {depth()} deep"
        locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (blocker,))
        threads = [
            threading.Thread(target=store.commit, args=(blocker, f"{i}".encode(), in_(60)))
            for i in range(size)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: lock_waiters(db) == size, "the commits did not all reach the server")
        assert len(store._commits._queue) == 0
        locker.rollback()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()


async def test_async_through_a_slow_network_sends_a_statement_per_connection(
    sessionstore_proxy: TcpProxy,
    sessionstore_proxy_dsn: str,
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    """The asyncio twin: past two lanes, up to the pool, when the round trip holds them."""
    size = 8
    blocker = new_token()
    db.execute("INSERT INTO sessions VALUES (%s, 'old', now() + interval '1 hour')", (blocker,))
    sessionstore_proxy.delay(SLOW_NETWORK)
    async with AsyncConnectionPool(
        sessionstore_proxy_dsn, min_size=size, max_size=size, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        depth = store._commits._lanes._depth
        for _ in range(MEASURING_ROUNDS):
            if depth() >= size:
                break
            await asyncio.gather(*(store.find(blocker) for _ in range(size)))
        assert depth() >= size, f"a {SLOW_NETWORK * 2:.2f} s round trip measured {depth()} deep"
        locker = await psycopg.AsyncConnection.connect(sessionstore_dsn)
        await locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (blocker,))
        tasks = [
            asyncio.create_task(store.commit(blocker, f"{i}".encode(), in_(60)))
            for i in range(size)
        ]
        deadline = time.monotonic() + 10
        while lock_waiters(db) < size:
            assert time.monotonic() < deadline, "the commits did not all reach the server"
            await asyncio.sleep(0.01)
        assert len(store._commits._queue) == 0
        await locker.rollback()
        await locker.close()
        await asyncio.gather(*tasks)
