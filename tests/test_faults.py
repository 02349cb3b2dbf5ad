"""Faults: backends killed under load, the retry-once rule, and what is never retried."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from _support import in_, new_token
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore.cleanup import NoCleanup


def kill_backends(db: psycopg.Connection[Any]) -> int:
    """Terminate every other backend of this database: what a restart does to a pool."""
    row = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_killed_backends_under_load_cause_no_error(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    errors: list[BaseException] = []
    done = threading.Event()
    ops_after_kill = [0]
    killed = threading.Event()
    with ConnectionPool(
        sessionstore_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}
    ) as pool:
        store = Store(pool, cleanup=NoCleanup())
        pool.wait()

        def work() -> None:
            token = new_token()
            while not done.is_set():
                try:
                    store.commit(token, b"x", in_(60))
                    assert store.find(token) == b"x"
                    if killed.is_set():
                        ops_after_kill[0] += 1
                except BaseException as exc:  # collected and asserted below
                    errors.append(exc)

        workers = [threading.Thread(target=work) for _ in range(8)]
        for thread in workers:
            thread.start()
        time.sleep(0.3)
        for _ in range(3):
            assert kill_backends(db) >= 1
            killed.set()
            time.sleep(0.3)
        done.set()
        for thread in workers:
            thread.join(10)
    assert errors == []
    assert ops_after_kill[0] > 0


async def test_async_killed_backends_under_load_cause_no_error(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    errors: list[BaseException] = []
    stop = asyncio.Event()
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        await apool.wait()

        async def work() -> int:
            token, count = new_token(), 0
            while not stop.is_set():
                try:
                    await store.commit(token, b"x", in_(60))
                    assert await store.find(token) == b"x"
                    count += 1
                except Exception as exc:  # collected and asserted below
                    errors.append(exc)
            return count

        tasks = [asyncio.create_task(work()) for _ in range(8)]
        await asyncio.sleep(0.3)
        for _ in range(3):
            assert await asyncio.to_thread(kill_backends, db) >= 1
            await asyncio.sleep(0.3)
        stop.set()
        counts = await asyncio.gather(*tasks)
    assert errors == []
    assert sum(counts) > 0


def test_errors_on_a_healthy_connection_are_not_retried(
    sessionstore_dsn: str, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A row locked elsewhere: commit fails at lock_timeout, once, without a retry."""
    token = new_token()
    db.execute("INSERT INTO sessions VALUES (%s, '', now() + interval '1 hour')", (token,))
    with (
        ConnectionPool(
            sessionstore_dsn,
            min_size=1,
            kwargs={"autocommit": True, "options": "-c lock_timeout=200ms"},
        ) as pool,
        psycopg.connect(sessionstore_dsn) as locker,
    ):
        store = Store(pool, cleanup=NoCleanup())
        locker.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (token,))
        t0 = time.monotonic()
        with pytest.raises(DatabaseError) as info:
            store.commit(token, b"new", in_(60))
        elapsed = time.monotonic() - t0
        locker.rollback()
    assert isinstance(info.value.__cause__, psycopg.errors.LockNotAvailable)
    assert elapsed < 2
    assert "retrying" not in caplog.text


def test_database_down_fails_fast_and_recovers(
    sessionstore_server: Any, sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    dbname = db.info.dbname
    with (
        psycopg.connect(sessionstore_server.dsn, autocommit=True) as admin,
        ConnectionPool(
            sessionstore_dsn,
            min_size=1,
            max_size=1,
            timeout=0.5,
            reconnect_timeout=60,
            kwargs={"autocommit": True},
        ) as pool,
    ):
        store = Store(pool, cleanup=NoCleanup())
        token = new_token()
        store.commit(token, b"before", in_(60))
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        kill_backends(db)
        try:
            for _ in range(3):
                t0 = time.monotonic()
                with pytest.raises(DatabaseError):
                    store.find(token)
                assert time.monotonic() - t0 < 3  # the pool's timeout bounds each call
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + 15
        while True:
            try:
                assert store.find(token) == b"before"
                break
            except DatabaseError:
                assert time.monotonic() < deadline, "the store did not recover"
                time.sleep(0.2)
