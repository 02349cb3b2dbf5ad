"""Metrics: read back through the OpenTelemetry SDK's in-memory reader, on the real database."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from _support import Both, in_, insert_expired, new_token, wait_until
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore._concurrency import LANES
from sessionstore.cleanup import NoCleanup
from sessionstore.metrics import OpenTelemetryRecorder, Recorder, error_type
from sessionstore.metrics._otel import DURATION_BUCKETS
from sessionstore.testing import TcpProxy

BASE = {"db.system.name": "postgresql", "db.collection.name": "sessions"}


class Readings:
    """What an in-memory reader holds, by metric name: [(attributes, point)]."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def read(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "sessionstore"
                for metric in scope.metrics:
                    points = out.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        points.append((dict(point.attributes or {}), point))
        return out

    def durations(self, **attributes: str) -> list[HistogramDataPoint]:
        wanted = {**BASE, **attributes}
        return [p for a, p in self.read().get("db.client.operation.duration", []) if a == wanted]

    def count(self, operation: str) -> int:
        return sum(p.count for p in self.durations(**{"db.operation.name": operation}))

    def total(self, name: str, **attributes: str) -> float:
        wanted = {**BASE, **attributes}
        points = self.read().get(name, [])
        return sum(
            p.sum if isinstance(p, HistogramDataPoint) else p.value
            for a, p in points
            if a == wanted
        )


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader
    provider.shutdown()


@pytest.fixture(params=["sync", "async"])
async def measured(
    request: pytest.FixtureRequest, sessionstore_dsn: str
) -> AsyncIterator[tuple[Both, Readings]]:
    """A store of either facade recording to its own meter provider and in-memory reader."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    recorder = OpenTelemetryRecorder(meter_provider=provider)
    kwargs: dict[str, Any] = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs) as pool:
            yield Both(Store(pool, cleanup=NoCleanup(), on_operation=recorder)), Readings(reader)
    else:
        async with AsyncConnectionPool(
            sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs
        ) as apool:
            store = AsyncStore(apool, cleanup=NoCleanup(), on_operation=recorder)
            async with store:
                yield Both(store), Readings(reader)
    provider.shutdown()


async def test_every_operation_records_its_duration_with_the_conventions_attributes(
    measured: tuple[Both, Readings], db: psycopg.Connection[Any]
) -> None:
    store, readings = measured
    token, other = new_token(), new_token()
    await store.commit(token, b"data", in_(60))
    assert await store.find(token) == b"data"
    assert await store.touch(token, in_(120))
    assert await store.create(other, b"new", in_(60))
    assert await store.exists(token)
    assert await store.expiry(token) is not None
    assert set(await store.all()) == {token, other}
    await store.delete(other)
    insert_expired(db, 3)
    assert await store.purge_expired(batch_size=2) == 3
    assert not await store.create_table()
    assert await store.clear() == 1

    for operation in (
        "commit",
        "find",
        "touch",
        "create",
        "exists",
        "expiry",
        "all",
        "delete",
        "purge",
        "create_table",
        "clear",
    ):
        points = readings.durations(**{"db.operation.name": operation})
        assert [p.count for p in points] == [1], operation
        assert points[0].explicit_bounds == DURATION_BUCKETS
        assert 0 < points[0].sum < 60
    # The purge's details: 3 rows in two statements (2, then 1 < batch size), no skip.
    purge = {"db.operation.name": "purge"}
    assert readings.total("sessionstore.purge.rows", **purge) == 3
    assert readings.total("sessionstore.purge.rounds", **purge) == 2
    assert readings.total("sessionstore.purge.skips", **purge) == 0
    assert readings.total("sessionstore.retries", **{"db.operation.name": "find"}) == 0

    # No attribute of any metric carries a token (nor any value but the few names).
    for series in readings.read().values():
        for attributes, _ in series:
            for value in attributes.values():
                assert token not in str(value)
                assert other not in str(value)
                assert str(value) in {
                    "postgresql",
                    "sessions",
                    "commit",
                    "find",
                    "touch",
                    "create",
                    "exists",
                    "expiry",
                    "all",
                    "delete",
                    "purge",
                    "create_table",
                    "clear",
                }


async def test_a_purge_left_to_another_counts_a_skip(
    measured: tuple[Both, Readings], db: psycopg.Connection[Any]
) -> None:
    store, readings = measured
    insert_expired(db, 2)
    key = (store.store._core.purge_key,)
    db.execute("SELECT pg_advisory_lock(%s)", key)  # another purge holds the table
    try:
        assert await store.try_purge_expired() is None
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", key)
    purge = {"db.operation.name": "purge"}
    assert readings.total("sessionstore.purge.skips", **purge) == 1
    assert readings.total("sessionstore.purge.rows", **purge) == 0
    assert readings.total("sessionstore.purge.rounds", **purge) == 1


async def test_a_server_error_is_recorded_with_its_sqlstate(sessionstore_dsn: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    recorder = OpenTelemetryRecorder(meter_provider=provider)
    token = new_token()
    with ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool:
        store = Store(
            pool, schema="app", table="missing", cleanup=NoCleanup(), on_operation=recorder
        )
        with pytest.raises(DatabaseError) as raised:
            store.find(token)
    assert raised.value.sqlstate == "42P01"
    points = Readings(reader).read()["db.client.operation.duration"]
    assert [(a, p.count) for a, p in points] == [
        (
            {
                "db.system.name": "postgresql",
                "db.collection.name": "app.missing",  # schema-qualified, unquoted
                "db.operation.name": "find",
                "error.type": "42P01",
                "db.response.status_code": "42P01",
            },
            1,
        )
    ]
    provider.shutdown()


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_a_lost_server_is_recorded_with_the_error_class_and_the_retries(
    facade: str, sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    recorder = OpenTelemetryRecorder(meter_provider=provider)
    readings = Readings(reader)
    kwargs: dict[str, Any] = {"autocommit": True}
    token = new_token()
    if facade == "sync":
        with ConnectionPool(sessionstore_proxy_dsn, min_size=1, timeout=2, kwargs=kwargs) as pool:
            store = Both(Store(pool, cleanup=NoCleanup(), on_operation=recorder))
            await store.commit(token, b"x", in_(60))
            sessionstore_proxy.reset()  # the server is gone: every connection is reset
            with pytest.raises(DatabaseError):
                await store.find(token)
    else:
        async with AsyncConnectionPool(
            sessionstore_proxy_dsn, min_size=1, timeout=2, kwargs=kwargs
        ) as apool:
            store = Both(AsyncStore(apool, cleanup=NoCleanup(), on_operation=recorder))
            await store.commit(token, b"x", in_(60))
            sessionstore_proxy.reset()
            with pytest.raises(DatabaseError):
                await store.find(token)
    failed = [a for a, _ in readings.read()["db.client.operation.duration"] if "error.type" in a]
    assert len(failed) == 1
    assert failed[0]["db.operation.name"] == "find"
    # No SQLSTATE from a server that is not there: the exception's class.
    assert failed[0]["error.type"] in {"psycopg.OperationalError", "psycopg_pool.PoolTimeout"}
    assert "db.response.status_code" not in failed[0]
    assert readings.total("sessionstore.retries", **{"db.operation.name": "find"}) >= 1
    provider.shutdown()


def test_combined_statements_record_their_size_sync(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Each lane's commit waits on its own locked row; N more queue. Freeing one lane
    sends the N as one statement (freeing both at once could split them).

    The pool has just LANES connections: threads run up to ALONE single calls at
    once, within the pool's size, so with more the N would not all queue.
    """
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    readings = Readings(reader)
    queued = 5
    with (
        ConnectionPool(
            sessionstore_dsn, min_size=LANES, max_size=LANES, kwargs={"autocommit": True}
        ) as pool,
        Lockers(sessionstore_dsn, db) as lockers,
    ):
        store = Store(
            pool, cleanup=NoCleanup(), on_operation=OpenTelemetryRecorder(meter_provider=provider)
        )
        threads = [
            threading.Thread(target=store.commit, args=(token, b"new", in_(60)))
            for token in lockers.tokens
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: _waiting_on_locks(db) == LANES)
        more = [
            threading.Thread(target=store.commit, args=(new_token(), b"q", in_(60)))
            for _ in range(queued)
        ]
        for thread in more:
            thread.start()
        wait_until(lambda: len(store._commits._queue) == queued)
        lockers.release(0)
        for thread in [threads[0], *more]:
            thread.join(30)
        lockers.release(1)
        threads[1].join(30)
    assert _batches(readings, "commit") == [queued]
    # One combined statement is one operation: LANES + 1 commit durations in all.
    assert readings.count("commit") == LANES + 1
    provider.shutdown()


async def test_combined_statements_record_their_size_async(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    readings = Readings(reader)
    queued = 5
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(
            apool, cleanup=NoCleanup(), on_operation=OpenTelemetryRecorder(meter_provider=provider)
        )
        with Lockers(sessionstore_dsn, db) as lockers:
            leads = [
                asyncio.create_task(store.commit(token, b"new", in_(60)))
                for token in lockers.tokens
            ]
            await _until(lambda: _waiting_on_locks(db) == LANES)
            more = [
                asyncio.create_task(store.commit(new_token(), b"q", in_(60))) for _ in range(queued)
            ]
            await _until(lambda: len(store._commits._queue) == queued)
            lockers.release(0)
            await asyncio.gather(leads[0], *more)
            lockers.release(1)
            await leads[1]
    assert _batches(readings, "commit") == [queued]
    assert readings.count("commit") == LANES + 1
    provider.shutdown()


class Lockers:
    """One connection per lane, each holding a row lock on its own session."""

    def __init__(self, dsn: str, db: psycopg.Connection[Any]) -> None:
        self.tokens = [new_token() for _ in range(LANES)]
        for token in self.tokens:
            db.execute(
                "INSERT INTO sessions VALUES (%s, 'old', now() + interval '1 hour')", (token,)
            )
        self.conns = [psycopg.connect(dsn) for _ in self.tokens]
        for conn, token in zip(self.conns, self.tokens, strict=True):
            conn.execute("SELECT 1 FROM sessions WHERE token = %s FOR UPDATE", (token,))

    def release(self, lane: int) -> None:
        self.conns[lane].rollback()

    def __enter__(self) -> Lockers:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns:
            conn.close()


def _batches(readings: Readings, operation: str) -> list[float]:
    points = readings.read().get("sessionstore.batch.size", [])
    wanted = {**BASE, "db.operation.name": operation}
    return [p.sum for a, p in points if a == wanted]


def _waiting_on_locks(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def _until(predicate: Any) -> None:
    deadline = time.monotonic() + 10.0
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_plain_callable_hook_gets_each_operation(store_hooked: Any) -> None:
    store, calls = store_hooked
    token = new_token()
    await store.commit(token, b"x", in_(60))
    assert await store.find(token) == b"x"
    assert [(name, error) for name, _, error in calls] == [("commit", None), ("find", None)]
    assert all(isinstance(seconds, float) and seconds > 0 for _, seconds, _ in calls)


@pytest_asyncio.fixture(params=["sync", "async"])
async def store_hooked(
    request: pytest.FixtureRequest, sessionstore_dsn: str
) -> AsyncIterator[tuple[Both, list[tuple[str, float, str | None]]]]:
    calls: list[tuple[str, float, str | None]] = []

    def hook(operation: str, seconds: float, error: str | None) -> None:
        calls.append((operation, seconds, error))

    kwargs: dict[str, Any] = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1, kwargs=kwargs) as pool:
            yield Both(Store(pool, cleanup=NoCleanup(), on_operation=hook)), calls
    else:
        async with AsyncConnectionPool(sessionstore_dsn, min_size=1, kwargs=kwargs) as apool:
            yield Both(AsyncStore(apool, cleanup=NoCleanup(), on_operation=hook)), calls


def test_a_failing_hook_is_logged_and_the_operation_still_succeeds(
    sessionstore_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(operation: str, seconds: float, error: str | None) -> None:
        raise RuntimeError("a bug in the metrics")

    token = new_token()
    with ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool:
        store = Store(pool, cleanup=NoCleanup(), on_operation=broken)
        with caplog.at_level(logging.ERROR, logger="sessionstore.metrics"):
            store.commit(token, b"x", in_(60))
            assert store.find(token) == b"x"
    assert [r.getMessage() for r in caplog.records] == [
        "on_operation hook failed for commit",
        "on_operation hook failed for find",
    ]
    assert token not in caplog.text


def test_a_recorder_subclass_gets_batches_retries_and_purges_too(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    seen: list[tuple[Any, ...]] = []

    class Everything(Recorder):
        def __call__(self, operation: str, seconds: float, error: str | None) -> None:
            seen.append(("op", operation, error))

        def purge(self, rows: int | None, rounds: int) -> None:
            seen.append(("purge", rows, rounds))

    insert_expired(db, 1)
    with ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool:
        store = Store(pool, cleanup=NoCleanup(), on_operation=Everything())
        assert store.purge_expired() == 1
    assert seen == [("purge", 1, 1), ("op", "purge", None)]


def test_on_operation_must_be_callable(sessionstore_dsn: str) -> None:
    with (
        ConnectionPool(sessionstore_dsn, min_size=1) as pool,
        pytest.raises(TypeError, match="on_operation must be a callable, not int"),
    ):
        Store(pool, cleanup=NoCleanup(), on_operation=3)  # type: ignore[arg-type]


def test_error_type_names_the_class_when_there_is_no_sqlstate() -> None:
    assert error_type(DatabaseError("find", psycopg.OperationalError("gone"))) == (
        "psycopg.OperationalError"
    )
    assert error_type(asyncio.CancelledError()) == "asyncio.exceptions.CancelledError"
    assert error_type(ValueError("x")) == "ValueError"


_WITHOUT_OTEL = """
import importlib.abc, json, sys

class NoOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
from psycopg_pool import ConnectionPool
from sessionstore import Store
from sessionstore.cleanup import NoCleanup

with ConnectionPool(sys.argv[1], min_size=1, kwargs={"autocommit": True}) as pool:
    store = Store(pool, cleanup=NoCleanup())
    store.find("t")
    print(json.dumps({
        "imported": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
        "recorder": store._metrics is not None,
        "query_replaced": "_query" in vars(store),
    }))
"""

_GLOBAL_PROVIDER = """
import json, sys
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from psycopg_pool import ConnectionPool
from sessionstore import Store
from sessionstore.cleanup import NoCleanup

reader = InMemoryMetricReader()
with ConnectionPool(sys.argv[1], min_size=1, kwargs={"autocommit": True}) as pool:
    store = Store(pool, cleanup=NoCleanup())  # built before the provider is set
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    store.find("t")
names = [
    (m.name, dict(p.attributes))
    for r in reader.get_metrics_data().resource_metrics
    for s in r.scope_metrics for m in s.metrics for p in m.data.data_points
]
print(json.dumps(names))
"""


def _run(code: str, dsn: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_opentelemetry_nothing_is_imported_and_nothing_timed(
    sessionstore_dsn: str,
) -> None:
    assert _run(_WITHOUT_OTEL, sessionstore_dsn) == {
        "imported": [],
        "recorder": False,
        "query_replaced": False,
    }


def test_with_opentelemetry_the_default_records_to_the_global_provider(
    sessionstore_dsn: str,
) -> None:
    assert _run(_GLOBAL_PROVIDER, sessionstore_dsn) == [
        ["db.client.operation.duration", {**BASE, "db.operation.name": "find"}]
    ]
