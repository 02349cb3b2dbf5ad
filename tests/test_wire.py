"""Statements on libpq directly (`_wire`), and where the cursor path stays (both facades).

Where the path matters, a test reads back from PostgreSQL itself
(`pg_prepared_statements` of the pool's one connection) which path ran.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore._wire import _name, _numbered_query, _prepared
from sessionstore.cleanup import NoCleanup

Query = Callable[[str], Awaitable[list[tuple[Any, ...]]]]
Factory = Callable[..., Awaitable[tuple[Both, Query]]]


class _OwnCursor(psycopg.Cursor[Any]):
    """An application's cursor class, as tracing instrumentation installs one."""


class _OwnAsyncCursor(psycopg.AsyncCursor[Any]):
    """The asyncio twin of `_OwnCursor`."""


PREPARED = "SELECT name FROM pg_prepared_statements ORDER BY name"


@pytest.fixture(params=["sync", "async"])
async def one_connection(
    request: pytest.FixtureRequest, sessionstore_dsn: str
) -> AsyncIterator[Factory]:
    """Make a store on a pool of one connection with the given connection kwargs.

    Yields a factory: ``store, query = await make(**kwargs)``; `query` runs SQL on
    the store's own (only) connection, so it sees that session's prepared statements.
    ``cursor_factory="own"`` stands for a cursor class of the application's, of the
    facade's kind, and ``"client"`` for psycopg's client-side-binding cursor.
    """
    pools: list[Any] = []

    async def make(table: str | None = None, **kwargs: Any) -> tuple[Both, Query]:
        sync = request.param == "sync"
        if kwargs.get("cursor_factory") == "own":  # the facade's own kind
            kwargs["cursor_factory"] = _OwnCursor if sync else _OwnAsyncCursor
        elif kwargs.get("cursor_factory") == "client":
            kwargs["cursor_factory"] = psycopg.ClientCursor if sync else psycopg.AsyncClientCursor
        if sync:
            pool = ConnectionPool(
                sessionstore_dsn, min_size=1, max_size=1, kwargs=kwargs, open=True
            )
            pools.append(pool)

            async def query(sql: str) -> list[tuple[Any, ...]]:
                with pool.connection() as conn:
                    cursor = conn.execute(sql)
                    return cursor.fetchall() if cursor.description else []

            store = Both(Store(pool, table=table or "sessions", cleanup=NoCleanup()))
        else:
            apool = AsyncConnectionPool(
                sessionstore_dsn, min_size=1, max_size=1, kwargs=kwargs, open=False
            )
            await apool.open()
            pools.append(apool)

            async def query(sql: str) -> list[tuple[Any, ...]]:
                async with apool.connection() as conn:
                    cursor = await conn.execute(sql)
                    return await cursor.fetchall() if cursor.description else []

            store = Both(AsyncStore(apool, table=table or "sessions", cleanup=NoCleanup()))
        return store, query

    yield make
    for pool in pools:
        if isinstance(pool, AsyncConnectionPool):
            await pool.close()
        else:
            pool.close()


async def _every_operation(store: Both) -> None:
    """Run each operation the batchers run singly, and check what it returns."""
    token = new_token()
    assert await store.find(token) is None
    await store.commit(token, b"data", in_(60))
    assert await store.find(token) == b"data"
    assert await store.touch(token, in_(120)) is True
    await store.delete(token)
    assert await store.find(token) is None


async def test_each_statement_is_prepared_once_per_connection(one_connection: Factory) -> None:
    store, query = await one_connection(autocommit=True)
    await _every_operation(store)
    prepared = [name for (name,) in await query(PREPARED)]
    # find, commit, touch, delete: one each, under the store's names, none of psycopg's.
    assert len(prepared) == 4
    assert all(name.startswith("_sessionstore_") for name in prepared)
    for _ in range(5):
        await _every_operation(store)
    assert [name for (name,) in await query(PREPARED)] == prepared


async def test_without_prepare_threshold_nothing_is_prepared(one_connection: Factory) -> None:
    """psycopg's setting for PgBouncer < 1.21 is followed: statements run unnamed."""
    store, query = await one_connection(autocommit=True, prepare_threshold=None)
    for _ in range(6):
        await _every_operation(store)
    assert await query(PREPARED) == []


async def test_statements_deallocated_behind_the_store_are_prepared_again(
    one_connection: Factory,
) -> None:
    store, query = await one_connection(autocommit=True)
    token = new_token()
    await store.commit(token, b"kept", in_(60))
    assert await store.find(token) == b"kept"
    await query("DISCARD ALL")  # what a pool's reset callback may run
    assert await query(PREPARED) == []
    assert await store.find(token) == b"kept"
    await store.commit(token, b"again", in_(60))
    assert await store.find(token) == b"again"
    assert len(await query(PREPARED)) == 2  # find and commit, prepared again


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"autocommit": False}, id="not-autocommit"),
        pytest.param({"autocommit": True, "cursor_factory": "own"}, id="own-cursor"),
        pytest.param({"autocommit": True, "cursor_factory": "client"}, id="client-cursor"),
    ],
)
async def test_the_cursor_path_where_the_connection_asks_for_it(
    one_connection: Factory, kwargs: dict[str, Any]
) -> None:
    """Outside autocommit psycopg's transaction is what the application chose; a
    cursor class of its own (OpenTelemetry's tracing sets one) is the application's
    too, and must see every statement; a client-side-binding cursor binds them."""
    client = kwargs.get("cursor_factory") == "client"
    store, query = await one_connection(**kwargs)
    for _ in range(3):
        await _every_operation(store)
    prepared = [name for (name,) in await query(PREPARED)]
    assert not [name for name in prepared if name.startswith("_sessionstore_")]
    if client:  # binds parameters into the text: never prepares
        assert prepared == []
    else:  # psycopg's own cache, so its cursors ran the statements
        assert [name for name in prepared if name.startswith("_pg3_")]


def test_a_closed_connection_is_not_kept_by_the_store(sessionstore_dsn: str) -> None:
    """What the store keeps per connection must not keep the connection alive."""
    with ConnectionPool(
        sessionstore_dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True
    ) as pool:
        store = Store(pool, cleanup=NoCleanup())
        token = new_token()
        store.commit(token, b"data", in_(60))
        assert store.find(token) == b"data"
        with pool.connection() as conn:
            used = weakref.ref(conn)
        assert used() in _prepared  # the store's statements were prepared on it
        del conn
    gc.collect()
    assert used() is None


async def test_a_failed_statement_is_the_servers_error(one_connection: Factory) -> None:
    store, _ = await one_connection(table="no_such_table", autocommit=True)
    with pytest.raises(DatabaseError) as found:
        await store.find(new_token())
    assert found.value.sqlstate == "42P01"  # undefined_table: not "not found"
    with pytest.raises(DatabaseError) as committed:
        await store.commit(new_token(), b"lost?", in_(60))
    assert committed.value.sqlstate == "42P01"


def test_placeholders_become_numbered_and_percent_signs_stay() -> None:
    assert _numbered_query(b"SELECT %s, %s WHERE a LIKE 'x%%'") == (
        b"SELECT $1, $2 WHERE a LIKE 'x%'"
    )
    with pytest.raises(ValueError, match="unsupported placeholder"):
        _numbered_query(b"SELECT %(name)s")


def test_a_statements_name_is_its_query_and_types() -> None:
    """The same name in every process for the same statement, never for another one."""
    assert _name(b"SELECT $1", (25,)) == _name(b"SELECT $1", (25,))
    assert _name(b"SELECT $1", (25,)) != _name(b"SELECT $1", (0,))
    assert _name(b"SELECT $1", (25,)) != _name(b"SELECT $2", (25,))
    assert _name(b"SELECT $1", (25,)).startswith(b"_sessionstore_")


def test_a_psycopg_without_the_names_wire_uses_still_works(
    sessionstore_dsn: str, tmp_path: Any
) -> None:
    """A psycopg release that moved a name `_wire` uses: the stores take the public path."""
    script = tmp_path / "moved.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import datetime as dt
            import psycopg.generators
            del psycopg.generators.execute  # as a release that moved it would have it

            from psycopg_pool import ConnectionPool
            from sessionstore import Store, _wire
            from sessionstore.cleanup import NoCleanup

            assert not _wire.AVAILABLE and not _wire.enabled
            with ConnectionPool({sessionstore_dsn!r}, kwargs={{"autocommit": True}}) as pool:
                store = Store(pool, cleanup=NoCleanup())
                expiry = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
                store.commit("t" * 43, b"public path", expiry)
                assert store.find("t" * 43) == b"public path"
                with pool.connection() as conn:
                    names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements")]
                store.close()
            print("ok", names)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
    assert "_sessionstore_" not in result.stdout  # nothing ran on _wire
