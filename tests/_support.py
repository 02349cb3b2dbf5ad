"""Helpers shared by the tests (imported as a plain module)."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from sessionstore import AsyncStore, Store


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def new_token() -> str:
    """A token like SCS's: 32 random bytes, url-safe base64."""
    return secrets.token_urlsafe(32)


def in_(seconds: float) -> dt.datetime:
    """An aware expiry `seconds` from now (by this machine's clock)."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def db_now(conn: psycopg.Connection[Any]) -> dt.datetime:
    """The database's clock."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: dt.datetime = row[0]
    return now


def table_rows(
    conn: psycopg.Connection[Any], table: str = "sessions", schema: str | None = None
) -> list[tuple[Any, ...]]:
    """Every row of a table, expired ones included, in a stable order."""
    name = sql.Identifier(table) if schema is None else sql.Identifier(schema, table)
    query = sql.SQL("SELECT token, data, expiry FROM {} ORDER BY token").format(name)
    return conn.execute(query).fetchall()


class Both:
    """One awaitable surface over `Store` or `AsyncStore`, for shared test bodies.

    The sync store's methods run directly (blocking is fine in a test); nothing is
    faked: both sides talk to the real database.
    """

    def __init__(self, store: Store | AsyncStore) -> None:
        self.store = store
        self.is_async = isinstance(store, AsyncStore)

    def __repr__(self) -> str:
        return f"Both({self.store!r})"

    async def walk(self, **kwargs: Any) -> dict[str, bytes]:
        """Everything `iter_all` yields, through either facade's context manager."""
        seen: dict[str, bytes] = {}
        if isinstance(self.store, AsyncStore):
            async with self.store.iter_all(**kwargs) as sessions:
                async for token, data in sessions:
                    seen[token] = data
        else:
            with self.store.iter_all(**kwargs) as sync_sessions:
                for token, data in sync_sessions:
                    seen[token] = data
        return seen

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            return await result if self.is_async else result

        return call


def purge_in_process(dsn: str, barrier: Any, batch_size: int) -> int | None:
    """Run in a child process: wait for the others, then try to purge once."""
    from psycopg_pool import ConnectionPool

    from sessionstore.cleanup import NoCleanup

    with (
        ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool,
        Store(pool, cleanup=NoCleanup()) as store,
    ):
        pool.wait()
        barrier.wait()
        return store.try_purge_expired(batch_size=batch_size)


def insert_expired(conn: psycopg.Connection[Any], count: int, table: str = "sessions") -> None:
    """Bulk-insert `count` expired sessions (expiries spread over the past hour)."""
    query = sql.SQL(
        "INSERT INTO {} (token, data, expiry) "
        "SELECT 'expired-' || md5(random()::text || i), '\\x00', "
        "now() - (i %% 3600) * interval '1 s' - interval '1 s' "
        "FROM generate_series(1, %s) AS i"
    ).format(sql.Identifier(table))
    conn.execute(query, (count,))
