"""Cleanup strategies: scheduling, stopping, weak references, errors, stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from _support import in_, insert_expired, new_token, table_rows, wait_until
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore.cleanup import NoCleanup, TaskCleanup, ThreadCleanup


@pytest.fixture
def pool(sessionstore_dsn: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool:
        yield pool


@pytest.fixture
async def apool(sessionstore_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=1, kwargs={"autocommit": True}
    ) as apool:
        yield apool


def cleanup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sessionstore-cleanup")]


def cleanup_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("sessionstore-cleanup")]


@pytest.mark.parametrize("cls", [ThreadCleanup, TaskCleanup])
@pytest.mark.parametrize("interval", [0, -1, dt.timedelta(0)])
def test_non_positive_interval_points_to_nocleanup(cls: type, interval: Any) -> None:
    with pytest.raises(ValueError, match=r"NoCleanup\(\)"):
        cls(interval=interval)


def test_interval_accepts_seconds_and_timedelta() -> None:
    assert ThreadCleanup().interval == 300
    assert ThreadCleanup(interval=dt.timedelta(minutes=2)).interval == 120
    assert TaskCleanup(interval=0.5).interval == 0.5


def test_store_defaults_to_a_five_minute_thread(pool: ConnectionPool[Any]) -> None:
    with Store(pool) as store:
        assert isinstance(store.cleanup, ThreadCleanup)
        assert store.cleanup.interval == 300
        assert [t.name for t in cleanup_threads()] == ['sessionstore-cleanup "sessions"']
    assert cleanup_threads() == []


def test_on_a_closed_pool_the_thread_starts_with_the_first_operation(
    sessionstore_dsn: str,
) -> None:
    pool = ConnectionPool(sessionstore_dsn, open=False, kwargs={"autocommit": True})
    with Store(pool) as store:
        assert cleanup_threads() == []  # a fork here (gunicorn --preload) finds no thread
        with pool:
            assert cleanup_threads() == []
            store.find(new_token())
            assert [t.name for t in cleanup_threads()] == ['sessionstore-cleanup "sessions"']
            store.find(new_token())
            assert len(cleanup_threads()) == 1
    assert cleanup_threads() == []


def test_a_cleanup_stopped_before_the_first_operation_never_starts(
    sessionstore_dsn: str,
) -> None:
    with ConnectionPool(sessionstore_dsn, open=False, kwargs={"autocommit": True}) as pool:
        store = Store(pool, cleanup=ThreadCleanup())
        store.stop_cleanup()
        store.find(new_token())
        assert cleanup_threads() == []


def test_thread_cleanup_purges_expired_sessions(
    pool: ConnectionPool[Any], db: psycopg.Connection[Any]
) -> None:
    live = new_token()
    cleanup = ThreadCleanup(interval=0.05)
    with Store(pool, cleanup=cleanup) as store:
        store.commit(live, b"live", in_(60))
        store.commit(new_token(), b"old", in_(-1))
        wait_until(lambda: len(table_rows(db)) == 1)
        wait_until(lambda: cleanup.stats.rows_deleted == 1)
    assert [row[0] for row in table_rows(db)] == [live]
    stats = cleanup.stats
    assert stats.runs >= 1
    assert stats.errors == 0
    assert stats.last_run is not None
    assert stats.last_duration is not None


async def test_task_cleanup_purges_expired_sessions(
    apool: AsyncConnectionPool[Any], db: psycopg.Connection[Any]
) -> None:
    cleanup = TaskCleanup(interval=0.05)
    async with AsyncStore(apool, cleanup=cleanup) as store:
        await store.commit(new_token(), b"old", in_(-1))
        for _ in range(200):
            if cleanup.stats.rows_deleted:
                break
            await asyncio.sleep(0.01)
        assert cleanup.stats.rows_deleted == 1
        assert len(cleanup_tasks()) == 1
    assert table_rows(db) == []
    assert cleanup_tasks() == []


def test_stop_cleanup_from_100_threads_at_once(pool: ConnectionPool[Any]) -> None:
    cleanup = ThreadCleanup(interval=0.01)
    store = Store(pool, cleanup=cleanup)
    # A worker that is there and looping, so the stop has something to end.
    [worker] = cleanup_threads()
    wait_until(lambda: cleanup.stats.runs >= 2)
    assert worker.is_alive()
    assert cleanup.running
    barrier = threading.Barrier(100)
    errors: list[BaseException] = []

    def stop() -> None:
        barrier.wait()
        try:
            store.stop_cleanup()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    stoppers = [threading.Thread(target=stop) for _ in range(100)]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(10)
    assert errors == []
    assert not any(t.is_alive() for t in stoppers)
    assert not worker.is_alive()
    assert not cleanup.running
    assert cleanup_threads() == []
    store.stop_cleanup()  # and once more, after it ended


async def test_async_stop_cleanup_from_100_tasks_at_once(apool: AsyncConnectionPool[Any]) -> None:
    store = AsyncStore(apool, cleanup=TaskCleanup(interval=0.01))
    await store.open()
    await asyncio.gather(*(store.stop_cleanup() for _ in range(100)))
    assert cleanup_tasks() == []
    await store.aclose()


def test_stop_on_a_store_without_cleanup(pool: ConnectionPool[Any]) -> None:
    store = Store(pool, cleanup=NoCleanup())
    store.stop_cleanup()
    store.stop_cleanup()
    token = new_token()
    store.commit(token, b"still works", in_(60))
    assert store.find(token) == b"still works"


async def test_async_store_works_without_open_and_starts_no_task(
    apool: AsyncConnectionPool[Any],
) -> None:
    store = AsyncStore(apool)
    token = new_token()
    await store.commit(token, b"x", in_(60))
    assert await store.find(token) == b"x"
    assert cleanup_tasks() == []
    await store.stop_cleanup()  # nothing started: still fine


def test_strategy_cannot_serve_two_stores(pool: ConnectionPool[Any]) -> None:
    cleanup = ThreadCleanup()
    with Store(pool, cleanup=cleanup), pytest.raises(RuntimeError, match="one cleanup strategy"):
        Store(pool, cleanup=cleanup)


def test_dropped_store_ends_its_thread_with_a_warning(
    pool: ConnectionPool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sessionstore.cleanup")
    store = Store(pool, cleanup=ThreadCleanup(interval=60))
    (thread,) = cleanup_threads()
    del store
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    assert "garbage-collected without close()" in caplog.text


async def test_dropped_async_store_ends_its_task_with_a_warning(
    apool: AsyncConnectionPool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sessionstore.cleanup")
    store = AsyncStore(apool, cleanup=TaskCleanup(interval=60))
    await store.open()
    (task,) = cleanup_tasks()
    del store
    gc.collect()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    assert "garbage-collected without close()" in caplog.text


def test_failed_purge_is_logged_reported_and_retried(
    pool: ConnectionPool[Any], db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "sessionstore.cleanup")
    secret = new_token()
    seen: list[BaseException] = []
    cleanup = ThreadCleanup(interval=0.05, on_error=seen.append)
    db.execute("ALTER TABLE sessions RENAME TO sessions_away")
    with Store(pool, cleanup=cleanup) as store:
        wait_until(lambda: cleanup.stats.errors >= 2)  # the loop survived the first failure
        db.execute("ALTER TABLE sessions_away RENAME TO sessions")
        store.commit(secret, b"old", in_(-1))
        wait_until(lambda: cleanup.stats.rows_deleted == 1)
    assert isinstance(seen[0], DatabaseError)
    assert cleanup.stats.last_error is None  # the last run succeeded
    assert "purge of" in caplog.text
    assert secret not in caplog.text


def test_run_on_start_and_jitter(pool: ConnectionPool[Any], db: psycopg.Connection[Any]) -> None:
    cleanup = ThreadCleanup(interval=3600, jitter=0.5, run_on_start=True)
    delays = {cleanup._next_delay() for _ in range(50)}
    assert all(1800 <= d <= 5400 for d in delays)
    assert len(delays) > 1
    db.execute("INSERT INTO sessions VALUES ('t', '', now() - interval '1 hour')")
    with Store(pool, cleanup=cleanup):
        wait_until(lambda: cleanup.stats.runs == 1)
    assert table_rows(db) == []


def test_under_preload_the_fork_finds_no_thread_and_each_child_starts_its_own(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """``gunicorn --preload``: the store is made before the fork, its pool opened after."""
    pool = ConnectionPool(sessionstore_dsn, open=False, kwargs={"autocommit": True})
    cleanup = ThreadCleanup(interval=0.05)
    store = Store(pool, cleanup=cleanup)
    assert cleanup_threads() == []  # nothing for Python 3.12+'s fork warning to find
    insert_expired(db, 3)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: open the pool; the first operation starts its own thread
        try:
            with pool:
                before = len(cleanup_threads())
                store.find(new_token())
                deadline = time.monotonic() + 20
                while cleanup.stats.rows_deleted < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                stats = cleanup.stats
                message = (
                    f"threads {before} then {len(cleanup_threads())}, "
                    f"deleted {stats.rows_deleted}, errors {stats.errors}"
                )
            store.close()
        except BaseException as exc:
            message = f"error: {exc!r}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    assert message == "threads 0 then 1, deleted 3, errors 0"
    assert cleanup_threads() == []  # the parent never used its store: no thread, no purge
    assert cleanup.stats.runs == 0
    store.close()
