"""Tracing: the psycopg instrumentation on the application's pool gives a span per statement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from _support import Both, in_, new_token
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore.cleanup import NoCleanup


@pytest_asyncio.fixture(params=["sync", "async"])
async def traced(
    request: pytest.FixtureRequest, sessionstore_dsn: str
) -> AsyncIterator[tuple[Both, InMemorySpanExporter]]:
    """A store whose pool instruments each new connection, as docs/operations.md shows."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    kwargs: dict[str, Any] = {"autocommit": True}
    if request.param == "sync":

        def configure(conn: psycopg.Connection[Any]) -> None:
            PsycopgInstrumentor().instrument_connection(conn, tracer_provider=provider)

        with ConnectionPool(
            sessionstore_dsn, min_size=1, kwargs=kwargs, configure=configure
        ) as pool:
            yield Both(Store(pool, cleanup=NoCleanup())), exporter
    else:

        async def aconfigure(conn: psycopg.AsyncConnection[Any]) -> None:
            PsycopgInstrumentor().instrument_connection(conn, tracer_provider=provider)

        async with AsyncConnectionPool(
            sessionstore_dsn, min_size=1, kwargs=kwargs, configure=aconfigure
        ) as apool:
            yield Both(AsyncStore(apool, cleanup=NoCleanup())), exporter
    provider.shutdown()


async def test_each_statement_is_a_span_and_no_span_carries_a_token(
    traced: tuple[Both, InMemorySpanExporter],
) -> None:
    store, exporter = traced
    token = new_token()
    await store.commit(token, b"secret data", in_(60))
    assert await store.find(token) == b"secret data"
    assert await store.touch(token, in_(120))
    await store.delete(token)
    spans = exporter.get_finished_spans()
    # One span per statement, carrying its SQL text (with placeholders, not values).
    statements = [dict(span.attributes or {}).get("db.statement") for span in spans]
    assert [str(text).split()[0] for text in statements] == ["INSERT", "SELECT", "UPDATE", "DELETE"]
    assert all('"sessions"' in str(text) and "%s" in str(text) for text in statements)
    for span in spans:
        attributes = dict(span.attributes or {})
        assert attributes["db.system"] == "postgresql"
        # Parameters are not captured by default: neither the token nor the data.
        assert not any(key.startswith("db.statement.parameters") for key in attributes)
        for value in attributes.values():
            assert token not in str(value)
            assert "secret data" not in str(value)
        assert token not in span.name
