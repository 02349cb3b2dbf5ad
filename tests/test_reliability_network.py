"""Slow, silent and broken networks, through the plugin's TCP proxy (sync and async).

The tests use the ``sessionstore_proxy`` and ``sessionstore_proxy_dsn`` fixtures as a
user's suite would.

What bounds a store call when the network fails (measured here, see
docs/reliability.md):

- A call that needs a new connection: the pool's ``timeout`` (each connection attempt
  is bounded by libpq's ``connect_timeout``). The call raises `DatabaseError` caused
  by ``PoolTimeout``.
- A call on an established connection whose peer went silent: nothing in libpq.
  ``statement_timeout`` never fires (the server never got the query), and TCP
  keepalives and ``tcp_user_timeout`` never fire either, because the peer's kernel
  still acknowledges every segment (they detect a dead host or link, which needs
  root to simulate). A sync call waits for the network to come back; an async call
  is bounded by the caller's own deadline (`asyncio.timeout`), plus up to 10 s that
  psycopg spends trying to cancel the query before it closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import ProxyMode, TcpProxy

logger = logging.getLogger(__name__)

KINDS = pytest.mark.parametrize("kind", ["sync", "async"])
#: libpq keepalives and tcp_user_timeout, as tight as they go: they still don't fire.
TCP_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 1000,
}


@contextlib.asynccontextmanager
async def open_store(kind: str, dsn: str, **pool_options: Any) -> AsyncIterator[Both]:
    """A sync or async store on its own pool; ``kwargs`` go to the connections."""
    kwargs = {"autocommit": True, **pool_options.pop("kwargs", {})}
    if kind == "sync":
        with ConnectionPool(dsn, kwargs=kwargs, **pool_options) as pool:
            pool.wait()
            yield Both(Store(pool, cleanup=NoCleanup()))
    else:
        async with AsyncConnectionPool(dsn, kwargs=kwargs, **pool_options) as apool:
            await apool.wait()
            yield Both(AsyncStore(apool, cleanup=NoCleanup()))


def pool_stats(store: Both) -> dict[str, int]:
    stats: dict[str, int] = store.store._pool.get_stats()
    return stats


async def wait_until_works(store: Both, token: str, expected: bytes, bound: float) -> float:
    """Call find until it answers `expected`; return how long that took."""
    start = time.monotonic()
    while True:
        try:
            assert await store.find(token) == expected
            return time.monotonic() - start
        except DatabaseError:
            assert time.monotonic() - start < bound, "the store did not recover"
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------------- the proxy itself


def round_trip(conn: psycopg.Connection[Any]) -> float:
    start = time.monotonic()
    conn.execute("SELECT 1").fetchone()
    return time.monotonic() - start


def test_proxy_modes(sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str) -> None:
    assert sessionstore_proxy.mode == ProxyMode("pass")
    with psycopg.connect(sessionstore_proxy_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert sessionstore_proxy.stats.open == 1

        sessionstore_proxy.delay(0.1)
        assert sessionstore_proxy.mode == ProxyMode("delay", 0.1)
        assert 0.2 <= round_trip(conn) < 1.0  # one round trip: 0.1 s each way

        sessionstore_proxy.blackhole()
        answers: list[Any] = []
        thread = threading.Thread(target=lambda: answers.append(round_trip(conn)))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # held, not lost...
        sessionstore_proxy.passthrough()
        thread.join(5)
        assert answers  # ...and delivered once the network is back
        assert answers[0] >= 0.5
        assert conn.execute("SELECT 2").fetchone() == (2,)

        assert sessionstore_proxy.reset_connections() == 1
        assert sessionstore_proxy.mode == ProxyMode("pass")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert conn.broken

    sessionstore_proxy.reset()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(sessionstore_proxy_dsn, connect_timeout=5)
    sessionstore_proxy.passthrough()
    with psycopg.connect(sessionstore_proxy_dsn) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)
    stats = sessionstore_proxy.stats
    assert (stats.accepted, stats.reset) == (3, 2)


def test_proxy_passes_on_a_server_side_close(
    sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """A backend that goes away takes its proxied connection with it: no half-open link."""
    with psycopg.connect(sessionstore_proxy_dsn, autocommit=True) as conn:
        db.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        deadline = time.monotonic() + 5
        while sessionstore_proxy.stats.open:
            assert time.monotonic() < deadline, "the sessionstore_proxy kept the connection open"
            time.sleep(0.01)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # fails at once instead of waiting for a reply


def test_proxy_rejects_bad_delays_and_use_before_start(sessionstore_server: Any) -> None:
    proxy = TcpProxy(sessionstore_server.host, sessionstore_server.port)
    with pytest.raises(RuntimeError, match="not started"):
        proxy.blackhole()
    with pytest.raises(RuntimeError, match="not started"):
        _ = proxy.port
    with proxy:
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="delay"):
                proxy.delay(bad)
        assert "127.0.0.1" in repr(proxy)
    proxy.close()  # idempotent


def test_proxy_resets_clients_when_the_target_is_down() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens here once closed
    with TcpProxy("127.0.0.1", port) as proxy:
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host=proxy.host, port=proxy.port, connect_timeout=5)
        assert time.monotonic() - start < 2


# ---------------------------------------------------------------------- the store


class Load:
    """Workers that commit and find their own session in a loop, threads or tasks."""

    def __init__(self, store: Both, workers: int = 8) -> None:
        self.store = store
        self.workers = workers
        self.errors: list[BaseException] = []
        self.ops = 0
        self._stop = threading.Event()

    def _one_sync(self, token: str) -> None:
        store = self.store.store
        assert isinstance(store, Store)
        while not self._stop.is_set():
            try:
                store.commit(token, b"x", in_(60))
                assert store.find(token) == b"x"
                self.ops += 1
            except Exception as exc:  # collected and asserted by the test
                self.errors.append(exc)

    async def _one_async(self, token: str) -> None:
        store = self.store.store
        assert isinstance(store, AsyncStore)
        while not self._stop.is_set():
            try:
                await store.commit(token, b"x", in_(60))
                assert await store.find(token) == b"x"
                self.ops += 1
            except Exception as exc:  # collected and asserted by the test
                self.errors.append(exc)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the workers for the duration of the block."""
        if self.store.is_async:
            tasks = [asyncio.create_task(self._one_async(new_token())) for _ in range(self.workers)]
            try:
                yield
            finally:
                self._stop.set()
                await asyncio.gather(*tasks)
        else:
            threads = [
                threading.Thread(target=self._one_sync, args=(new_token(),))
                for _ in range(self.workers)
            ]
            for thread in threads:
                thread.start()
            try:
                yield
            finally:
                self._stop.set()
                for thread in threads:
                    await asyncio.to_thread(thread.join, 30)


@KINDS
async def test_reset_mid_load_is_retried_without_errors(
    kind: str, sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str
) -> None:
    """RSTs on every pooled connection, three times, under load: nobody sees an error."""
    async with open_store(kind, sessionstore_proxy_dsn, min_size=4, max_size=4) as store:
        load = Load(store)
        resets = 0
        async with load.running():
            for _ in range(3):
                await asyncio.sleep(0.3)
                resets += await asyncio.to_thread(sessionstore_proxy.reset_connections)
            await asyncio.sleep(0.3)
        stats = pool_stats(store)
    assert load.errors == []
    assert resets >= 3
    assert load.ops > 0
    assert stats["pool_size"] == 4


@KINDS
async def test_latency_slows_calls_but_causes_no_error(
    kind: str,
    sessionstore_proxy: TcpProxy,
    sessionstore_proxy_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """50 ms each way: every call takes a round trip longer, none fails or is retried.

    ``statement_timeout`` counts server time only, so network latency above it is fine.
    """
    token = new_token()
    options = {"kwargs": {"options": "-c statement_timeout=50"}}
    async with open_store(kind, sessionstore_proxy_dsn, min_size=2, max_size=2, **options) as store:
        sessionstore_proxy.delay(0.05)
        for n in range(3):
            start = time.monotonic()
            await store.commit(token, b"v%d" % n, in_(60))
            assert await store.find(token) == b"v%d" % n
            assert time.monotonic() - start >= 0.2  # two calls, a round trip each
        assert await store.all() == {token: b"v2"}
        await store.delete(token)
        assert await store.purge_expired() == 0
    assert "retrying" not in caplog.text


@pytest.mark.slow
@KINDS
async def test_network_down_calls_fail_within_the_pool_timeout_and_recover(
    kind: str, sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str
) -> None:
    """The path to the database is gone: open connections broke, new ones go unanswered.

    Every call fails with DatabaseError within the pool's ``timeout`` (each connection
    attempt within libpq's ``connect_timeout``); service returns with the network.
    """
    pool_timeout = 1.0
    token = new_token()
    options: dict[str, Any] = {"kwargs": {"connect_timeout": 2, **TCP_OPTIONS}}
    async with open_store(
        kind, sessionstore_proxy_dsn, min_size=2, max_size=2, timeout=pool_timeout, **options
    ) as store:
        await store.commit(token, b"kept", in_(60))
        sessionstore_proxy.reset_connections()
        sessionstore_proxy.blackhole()
        durations = []
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(DatabaseError) as info:
                await store.find(token)
            durations.append(time.monotonic() - start)
        assert info.value.__cause__ is not None
        assert type(info.value.__cause__).__name__ == "PoolTimeout"
        logger.info("measured: calls failed after %s s", [round(d, 2) for d in durations])
        assert max(durations) < pool_timeout + 1.0
        sessionstore_proxy.passthrough()
        recovery = await wait_until_works(store, token, b"kept", bound=10)
        logger.info("measured: service back %.2f s after the network", recovery)
        assert pool_stats(store)["requests_waiting"] == 0


@pytest.mark.slow
@KINDS
async def test_connections_reset_on_sight_fail_within_the_pool_timeout_and_recover(
    kind: str, sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str
) -> None:
    """``reset`` mode (a firewall answering RST): calls fail fast, then recover."""
    pool_timeout = 1.0
    token = new_token()
    async with open_store(
        kind, sessionstore_proxy_dsn, min_size=2, max_size=2, timeout=pool_timeout
    ) as store:
        await store.commit(token, b"kept", in_(60))
        sessionstore_proxy.reset()
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(DatabaseError):
                await store.find(token)
            assert time.monotonic() - start < pool_timeout + 1.0
        sessionstore_proxy.passthrough()
        await wait_until_works(store, token, b"kept", bound=10)


@pytest.mark.slow
def test_silent_peer_blocks_a_sync_call_until_the_network_returns(
    sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str
) -> None:
    """No libpq setting bounds a call on an established connection to a silent peer.

    ``statement_timeout`` can't fire (the query never reached the server), and TCP
    keepalives and ``tcp_user_timeout`` can't either (the peer's kernel acknowledges
    every segment). The call waits, then completes correctly once the network is
    back; meanwhile other callers fail within the pool's ``timeout``.
    """
    token = new_token()
    kwargs = {"autocommit": True, "options": "-c statement_timeout=500", **TCP_OPTIONS}
    with ConnectionPool(
        sessionstore_proxy_dsn, min_size=1, max_size=1, timeout=1.0, kwargs=kwargs
    ) as pool:
        store = Store(pool, cleanup=NoCleanup())
        store.commit(token, b"kept", in_(60))
        sessionstore_proxy.blackhole()
        answers: list[object] = []

        def call() -> None:
            try:
                answers.append(store.find(token))
            except Exception as exc:  # reported through `answers`
                answers.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        caller.join(3.0)  # 6x statement_timeout, 3x tcp_user_timeout, keepalives idle 1 s
        assert caller.is_alive(), f"the call ended: {answers}"
        start = time.monotonic()
        with pytest.raises(DatabaseError, match="PoolTimeout"):
            store.find(token)  # the only connection is stuck: the pool's timeout bounds this
        assert time.monotonic() - start < 2.0
        sessionstore_proxy.passthrough()
        caller.join(10)
        assert answers == [b"kept"]
        assert store.find(token) == b"kept"


@pytest.mark.slow
async def test_silent_peer_async_call_is_bounded_by_the_callers_deadline(
    sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.timeout bounds an async call, plus psycopg's cancellation (up to ~10 s).

    On cancellation psycopg sends a cancel request (5 s timeout: it goes through the
    same dead network) and waits 5 s more for the query to end, then closes the
    connection; the pool replaces it once the network is back.
    """
    deadline = 0.5
    token = new_token()
    async with AsyncConnectionPool(
        sessionstore_proxy_dsn, min_size=1, max_size=1, timeout=1.0, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        await store.commit(token, b"kept", in_(60))
        sessionstore_proxy.blackhole()
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(deadline):
                await store.find(token)
        elapsed = time.monotonic() - start
        logger.info("measured: asyncio.timeout(%s) raised after %.2f s", deadline, elapsed)
        assert deadline <= elapsed < deadline + 10 + 3
        assert "closing connection" in caplog.text
        sessionstore_proxy.passthrough()
        assert await store.find(token) == b"kept"
        stats = apool.get_stats()
    assert stats["pool_size"] == 1
    assert stats["requests_waiting"] == 0
