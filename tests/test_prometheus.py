"""The Prometheus collector, read back through a real CollectorRegistry and over HTTP."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from _support import Both, in_, insert_expired, new_token, wait_until
from prometheus_client import CollectorRegistry, start_http_server
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore.cleanup import NoCleanup, ThreadCleanup
from sessionstore.metrics.prometheus import StoreCollector

LABEL = {"table": "sessions"}


@pytest_asyncio.fixture(params=["sync", "async"])
async def collected(
    request: pytest.FixtureRequest, sessionstore_dsn: str
) -> AsyncIterator[tuple[Both, CollectorRegistry]]:
    registry = CollectorRegistry()
    kwargs: dict[str, Any] = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1, max_size=3, kwargs=kwargs) as pool:
            store = Store(pool, cleanup=NoCleanup())
            registry.register(StoreCollector(store))
            yield Both(store), registry
    else:
        async with AsyncConnectionPool(
            sessionstore_dsn, min_size=1, max_size=3, kwargs=kwargs
        ) as apool:
            astore = AsyncStore(apool, cleanup=NoCleanup())
            registry.register(StoreCollector(astore))
            yield Both(astore), registry


async def test_the_pool_figures_are_the_pools_own(
    collected: tuple[Both, CollectorRegistry],
) -> None:
    store, registry = collected
    token = new_token()
    await store.commit(token, b"x", in_(60))
    for _ in range(4):
        assert await store.find(token) == b"x"

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, LABEL)

    stats = store.store.pool.get_stats()
    assert value("sessionstore_pool_max") == 3
    assert value("sessionstore_pool_min") == 1
    assert value("sessionstore_pool_size") == stats["pool_size"]
    assert value("sessionstore_pool_available") == stats["pool_available"]
    assert value("sessionstore_pool_requests_waiting") == 0
    # Five operations, one connection request each; get_stats, never pop_stats: twice the same.
    assert value("sessionstore_pool_requests_total") == 5
    assert value("sessionstore_pool_requests_total") == 5
    assert value("sessionstore_pool_connections_total") == stats["connections_num"] >= 1
    assert value("sessionstore_pool_connections_lost_total") == 0
    assert value("sessionstore_cleanup_runs_total") == 0
    assert value("sessionstore_cleanup_last_run_timestamp_seconds") is None  # none yet


def test_the_cleanup_figures_over_http(sessionstore_dsn: str, db: psycopg.Connection[Any]) -> None:
    insert_expired(db, 3)
    registry = CollectorRegistry()
    cleanup = ThreadCleanup(interval=3600, run_on_start=True)
    with (
        ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool,
        Store(pool, schema="public", cleanup=cleanup) as store,
    ):
        registry.register(StoreCollector(store))
        wait_until(lambda: cleanup.stats.runs == 1 and cleanup.stats.last_duration is not None)
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
    label = '{table="public.sessions"}'
    lines = set(text.splitlines())
    assert f"sessionstore_cleanup_runs_total{label} 1.0" in lines
    assert f"sessionstore_cleanup_rows_deleted_total{label} 3.0" in lines
    assert f"sessionstore_cleanup_skipped_total{label} 0.0" in lines
    assert f"sessionstore_cleanup_errors_total{label} 0.0" in lines
    assert any(
        line.startswith(f"sessionstore_cleanup_last_duration_seconds{label} ") for line in lines
    )
    assert "# TYPE sessionstore_pool_available gauge" in lines
    assert any(line.startswith(f"sessionstore_pool_requests_total{label} ") for line in lines)


def test_the_collector_wants_a_store() -> None:
    with pytest.raises(TypeError, match="store must be a Store or AsyncStore, not str"):
        StoreCollector("sessions")  # type: ignore[arg-type]
