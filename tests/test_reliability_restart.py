"""A database restart in the middle of a load, sync and async.

The tests run their own durable server (`ephemeral_postgres(env_var=None,
durable=True)`) so that restarting it disturbs no other test, and so that a crash
restart is a real test of "no acknowledged commit lost": with fsync or
synchronous_commit off, PostgreSQL itself may forget its last commits in a crash.

Every worker keeps exactly one call in flight, so "at most one error per in-flight
call" is "at most one error per worker". With a pool `timeout` longer than the outage,
the retry-once waits for the server to come back and the callers see no error at all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from _support import new_token
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore.cleanup import NoCleanup
from sessionstore.schema import ddl
from sessionstore.testing import PostgresServer, ephemeral_postgres

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

WORKERS = 8
POOL_SIZE = 4
#: Longer than any outage below: a caller waits for the server instead of failing.
PATIENT_POOL_TIMEOUT = 10.0
#: Shorter than the long outage: callers fail fast while the server is down.
IMPATIENT_POOL_TIMEOUT = 1.0
#: "Service is back within a few seconds" after the server accepts connections again.
#: What sets it is the pool's reconnect backoff (1, 2, 4... s after the connections
#: broke, +-10%): after an outage of d seconds the next attempt comes at most about
#: d + 1 s after the server is back.
RECOVERY_BOUND = 5.0
LONG_OUTAGE = 3.0
LONG_OUTAGE_RECOVERY_BOUND = LONG_OUTAGE + 2.0
LOAD_BEFORE = 0.5


@dataclass
class Call:
    """One store call a worker made, and how it ended."""

    start: float
    end: float
    error: BaseException | None = None


@dataclass
class Worker:
    """What one worker did: its calls, and the commits it knows the fate of."""

    token: str = field(default_factory=new_token)
    calls: list[Call] = field(default_factory=list)
    acknowledged: bytes | None = None
    #: Values of commits that failed after the last acknowledged one: they may or
    #: may not have been applied (the reply was lost), so either outcome is right.
    ambiguous: set[bytes] = field(default_factory=set)

    @property
    def errors(self) -> list[BaseException]:
        return [call.error for call in self.calls if call.error is not None]

    def first_success_after(self, moment: float) -> float | None:
        ends = [c.end for c in self.calls if c.error is None and c.start >= moment]
        return min(ends, default=None)


def far_future() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A durable server for this module alone, holding a sessions table."""
    with ephemeral_postgres(env_var=None, durable=True) as server:
        assert server.restartable
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(ddl(if_not_exists=True).encode())
        yield server


@pytest.fixture
def server(own_server: PostgresServer) -> PostgresServer:
    """The module's server with an empty sessions table."""
    with psycopg.connect(own_server.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE sessions")
    return own_server


def check_outcome(
    workers: list[Worker],
    down: float,
    up: float,
    *,
    max_errors_per_worker: int | None,
    recovery_bound: float = RECOVERY_BOUND,
) -> float:
    """Assert what a restart may do to the callers; return the measured recovery time."""
    for worker in workers:
        assert all(isinstance(e, DatabaseError) for e in worker.errors), worker.errors
        if max_errors_per_worker is not None:
            assert len(worker.errors) <= max_errors_per_worker, worker.errors
        # Service came back for every worker.
        assert worker.first_success_after(up) is not None
    firsts = [w.first_success_after(up) for w in workers]
    recovery = max(f for f in firsts if f is not None) - up
    assert recovery < recovery_bound, f"service took {recovery:.2f} s to come back"
    return recovery


def check_no_acknowledged_commit_lost(dsn: str, workers: list[Worker]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored: dict[str, bytes] = dict(conn.execute("SELECT token, data FROM sessions").fetchall())
    for worker in workers:
        assert worker.acknowledged is not None
        assert stored[worker.token] in {worker.acknowledged, *worker.ambiguous}


def run_sync_load(
    server: PostgresServer,
    pool_timeout: float,
    outage: Any,
) -> tuple[list[Worker], float, float]:
    """Run WORKERS threads of commit+find through `outage()`; return (workers, down, up)."""
    workers = [Worker() for _ in range(WORKERS)]
    stop = threading.Event()
    with ConnectionPool(
        server.dsn,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        timeout=pool_timeout,
        kwargs={"autocommit": True},
    ) as pool:
        store = Store(pool, cleanup=NoCleanup())
        pool.wait()

        def work(worker: Worker) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                value = f"v{n}".encode()
                call = Call(time.monotonic(), 0.0)
                try:
                    store.commit(worker.token, value, far_future())
                    worker.acknowledged, worker.ambiguous = value, set()
                    found = store.find(worker.token)
                    assert found == value
                except Exception as exc:  # anything but DatabaseError fails check_outcome
                    call.error = exc
                    worker.ambiguous.add(value)
                call.end = time.monotonic()
                worker.calls.append(call)

        threads = [threading.Thread(target=work, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_BEFORE)
        down = time.monotonic()
        outage()
        up = time.monotonic()
        deadline = up + LONG_OUTAGE_RECOVERY_BOUND + 2
        while time.monotonic() < deadline and not all(
            w.first_success_after(up) is not None for w in workers
        ):
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(pool_timeout + 10)
        assert not any(thread.is_alive() for thread in threads), "a worker hung"
        stats = pool.get_stats()
    assert stats["pool_size"] == POOL_SIZE
    assert stats["requests_waiting"] == 0
    return workers, down, up


async def run_async_load(
    server: PostgresServer, pool_timeout: float, outage: Any
) -> tuple[list[Worker], float, float]:
    """The async mirror of `run_sync_load`; `outage()` runs in a thread."""
    workers = [Worker() for _ in range(WORKERS)]
    stop = asyncio.Event()
    async with AsyncConnectionPool(
        server.dsn,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        timeout=pool_timeout,
        kwargs={"autocommit": True},
    ) as pool:
        store = AsyncStore(pool, cleanup=NoCleanup())
        await pool.wait()

        async def work(worker: Worker) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                value = f"v{n}".encode()
                call = Call(time.monotonic(), 0.0)
                try:
                    await store.commit(worker.token, value, far_future())
                    worker.acknowledged, worker.ambiguous = value, set()
                    found = await store.find(worker.token)
                    assert found == value
                except Exception as exc:  # anything but DatabaseError fails check_outcome
                    call.error = exc
                    worker.ambiguous.add(value)
                call.end = time.monotonic()
                worker.calls.append(call)

        tasks = [asyncio.create_task(work(w)) for w in workers]
        await asyncio.sleep(LOAD_BEFORE)
        down = time.monotonic()
        await asyncio.to_thread(outage)
        up = time.monotonic()
        for _ in range(int((LONG_OUTAGE_RECOVERY_BOUND + 2) / 0.05)):
            if all(w.first_success_after(up) is not None for w in workers):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        async with asyncio.timeout(pool_timeout + 10):
            await asyncio.gather(*tasks)
        stats = pool.get_stats()
    assert stats["pool_size"] == POOL_SIZE
    assert stats["requests_waiting"] == 0
    return workers, down, up


RESTARTS = pytest.mark.parametrize(
    "immediate", [False, True], ids=["fast-shutdown", "crash-immediate"]
)


@RESTARTS
def test_restart_under_load_sync(server: PostgresServer, immediate: bool) -> None:
    workers, down, up = run_sync_load(
        server,
        PATIENT_POOL_TIMEOUT,
        lambda: server.restart(downtime=1.0, immediate=immediate),
    )
    recovery = check_outcome(workers, down, up, max_errors_per_worker=1)
    logger.info("measured: service back %.3f s after the server was up", recovery)
    # The pool's timeout outlasts the outage: the retry-once waited, nobody failed.
    assert sum(len(w.errors) for w in workers) == 0
    check_no_acknowledged_commit_lost(server.dsn, workers)


@RESTARTS
async def test_restart_under_load_async(server: PostgresServer, immediate: bool) -> None:
    workers, down, up = await run_async_load(
        server,
        PATIENT_POOL_TIMEOUT,
        lambda: server.restart(downtime=1.0, immediate=immediate),
    )
    recovery = check_outcome(workers, down, up, max_errors_per_worker=1)
    logger.info("measured: service back %.3f s after the server was up", recovery)
    assert sum(len(w.errors) for w in workers) == 0
    check_no_acknowledged_commit_lost(server.dsn, workers)


class LongOutage:
    """Stop the server for `LONG_OUTAGE` seconds, noting when it was really down.

    A fast shutdown waits for running statements and can take a while on a loaded
    machine, so the moment the outage was asked for is not when the server went.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.down = self.up = 0.0

    def __call__(self) -> None:
        with self.server.stopped():  # the postmaster has exited inside the block
            self.down = time.monotonic()
            time.sleep(LONG_OUTAGE)
            self.up = time.monotonic()


def check_fast_failures(workers: list[Worker], outage: LongOutage) -> None:
    """While the server is down every call fails, each within the pool's timeout."""
    during = [c for w in workers for c in w.calls if outage.down < c.start and c.end < outage.up]
    assert during, "no call was made while the server was down"
    assert all(c.error is not None for c in during)
    slowest = max(c.end - c.start for w in workers for c in w.calls)
    # One wait for a connection, plus the retry's wait: never a hang.
    assert slowest < 2 * IMPATIENT_POOL_TIMEOUT + 1.5, f"a call took {slowest:.2f} s"


def test_outage_longer_than_pool_timeout_fails_fast_and_recovers_sync(
    server: PostgresServer,
) -> None:
    outage = LongOutage(server)
    workers, down, up = run_sync_load(server, IMPATIENT_POOL_TIMEOUT, outage)
    recovery = check_outcome(
        workers,
        down,
        up,
        max_errors_per_worker=None,
        recovery_bound=LONG_OUTAGE_RECOVERY_BOUND,
    )
    logger.info("measured: service back %.3f s after a %s s outage", recovery, LONG_OUTAGE)
    check_fast_failures(workers, outage)
    check_no_acknowledged_commit_lost(server.dsn, workers)


async def test_outage_longer_than_pool_timeout_fails_fast_and_recovers_async(
    server: PostgresServer,
) -> None:
    outage = LongOutage(server)
    workers, down, up = await run_async_load(server, IMPATIENT_POOL_TIMEOUT, outage)
    recovery = check_outcome(
        workers,
        down,
        up,
        max_errors_per_worker=None,
        recovery_bound=LONG_OUTAGE_RECOVERY_BOUND,
    )
    logger.info("measured: service back %.3f s after a %s s outage", recovery, LONG_OUTAGE)
    check_fast_failures(workers, outage)
    check_no_acknowledged_commit_lost(server.dsn, workers)
