"""Helpers shared by the tests (imported as a plain module)."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from sessionstore import AsyncStore, OwnedSession, Store, Versioned
from sessionstore.cleanup import Cancellation, NoCleanup


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


@contextlib.contextmanager
def least_privileged_store(
    dsn: str, db: psycopg.Connection[Any], role: str, **options: Any
) -> Iterator[Store]:
    """A `Store` as a new `role` made by `app_role`, dropped afterwards."""
    with (
        app_role(db, dsn, role) as role_dsn,
        ConnectionPool(role_dsn, min_size=1, kwargs={"autocommit": True}) as pool,
    ):
        yield Store(pool, cleanup=NoCleanup(), **options)


def table_rows(
    conn: psycopg.Connection[Any], table: str = "sessions", schema: str | None = None
) -> list[tuple[Any, ...]]:
    """Every row of a table, expired ones included, in a stable order."""
    name = sql.Identifier(table) if schema is None else sql.Identifier(schema, table)
    query = sql.SQL("SELECT token, data, expiry FROM {} ORDER BY token").format(name)
    return conn.execute(query).fetchall()


@contextlib.contextmanager
def app_role(db: psycopg.Connection[Any], dsn: str, name: str) -> Iterator[str]:
    """A role with only SELECT, INSERT, UPDATE and DELETE on the sessions table; its DSN.

    The least an application's role needs at run time; dropped afterwards.
    """
    role = sql.Identifier(name)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    db.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON sessions TO {}").format(role))
    try:
        yield psycopg.conninfo.make_conninfo(dsn, user=name)
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(role))
        db.execute(sql.SQL("DROP ROLE {}").format(role))


class Both:
    """One awaitable surface over `Store` or `AsyncStore`, for shared test bodies.

    Each method has the stores' own signature, made a coroutine: the sync store's
    method runs directly (blocking is fine in a test), the async one's is awaited.
    Nothing is faked: both sides talk to the real database.
    """

    def __init__(self, store: Store | AsyncStore) -> None:
        self.store = store
        self.is_async = isinstance(store, AsyncStore)

    def __repr__(self) -> str:
        return f"Both({self.store!r})"

    async def find(self, token: str) -> bytes | None:
        if isinstance(self.store, AsyncStore):
            return await self.store.find(token)
        return self.store.find(token)

    async def commit(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        *,
        owner: str | None = None,
    ) -> None:
        if isinstance(self.store, AsyncStore):
            await self.store.commit(token, data, expiry, owner=owner)
        else:
            self.store.commit(token, data, expiry, owner=owner)

    async def touch(self, token: str, expiry: dt.datetime) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.touch(token, expiry)
        return self.store.touch(token, expiry)

    async def create(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        *,
        owner: str | None = None,
    ) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.create(token, data, expiry, owner=owner)
        return self.store.create(token, data, expiry, owner=owner)

    async def update(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        *,
        owner: str | None = None,
    ) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.update(token, data, expiry, owner=owner)
        return self.store.update(token, data, expiry, owner=owner)

    async def find_versioned(self, token: str) -> Versioned | None:
        if isinstance(self.store, AsyncStore):
            return await self.store.find_versioned(token)
        return self.store.find_versioned(token)

    async def update_versioned(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        version: int,
        *,
        owner: str | None = None,
    ) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.update_versioned(token, data, expiry, version, owner=owner)
        return self.store.update_versioned(token, data, expiry, version, owner=owner)

    async def rotate(self, token: str, *, grace: dt.timedelta, prefix: str = "") -> str | None:
        if isinstance(self.store, AsyncStore):
            return await self.store.rotate(token, grace=grace, prefix=prefix)
        return self.store.rotate(token, grace=grace, prefix=prefix)

    async def exists(self, token: str) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.exists(token)
        return self.store.exists(token)

    async def expiry(self, token: str) -> dt.datetime | None:
        if isinstance(self.store, AsyncStore):
            return await self.store.expiry(token)
        return self.store.expiry(token)

    async def clear(self, *, batch_size: int | None = None) -> int:
        if isinstance(self.store, AsyncStore):
            return await self.store.clear(batch_size=batch_size)
        return self.store.clear(batch_size=batch_size)

    async def set_owner(self, token: str, owner: str | None) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.set_owner(token, owner)
        return self.store.set_owner(token, owner)

    async def sessions_of(self, owner: str) -> list[OwnedSession]:
        if isinstance(self.store, AsyncStore):
            return await self.store.sessions_of(owner)
        return self.store.sessions_of(owner)

    async def delete_owned(self, owner: str, *, keep: str | None = None) -> int:
        if isinstance(self.store, AsyncStore):
            return await self.store.delete_owned(owner, keep=keep)
        return self.store.delete_owned(owner, keep=keep)

    async def revoke(self, owner: str, key: str) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.revoke(owner, key)
        return self.store.revoke(owner, key)

    async def delete(self, token: str) -> None:
        if isinstance(self.store, AsyncStore):
            await self.store.delete(token)
        else:
            self.store.delete(token)

    async def all(self) -> dict[str, bytes]:
        if isinstance(self.store, AsyncStore):
            return await self.store.all()
        return self.store.all()

    async def walk(self, *, batch_size: int = 1000) -> dict[str, bytes]:
        """Everything `iter_all` yields, through either facade's context manager."""
        seen: dict[str, bytes] = {}
        if isinstance(self.store, AsyncStore):
            async with self.store.iter_all(batch_size=batch_size) as sessions:
                async for token, data in sessions:
                    seen[token] = data
        else:
            with self.store.iter_all(batch_size=batch_size) as sync_sessions:
                for token, data in sync_sessions:
                    seen[token] = data
        return seen

    async def purge_expired(self, *, batch_size: int | None = None) -> int:
        if isinstance(self.store, AsyncStore):
            return await self.store.purge_expired(batch_size=batch_size)
        return self.store.purge_expired(batch_size=batch_size)

    async def try_purge_expired(
        self, *, batch_size: int | None = None, cancel: Cancellation | None = None
    ) -> int | None:
        if isinstance(self.store, AsyncStore):
            return await self.store.try_purge_expired(batch_size=batch_size, cancel=cancel)
        return self.store.try_purge_expired(batch_size=batch_size, cancel=cancel)

    async def reencrypt(self, *, batch_size: int | None = None) -> int:
        if isinstance(self.store, AsyncStore):
            return await self.store.reencrypt(batch_size=batch_size)
        return self.store.reencrypt(batch_size=batch_size)

    async def create_table(self) -> bool:
        if isinstance(self.store, AsyncStore):
            return await self.store.create_table()
        return self.store.create_table()

    async def stop_cleanup(self) -> None:
        if isinstance(self.store, AsyncStore):
            await self.store.stop_cleanup()
        else:
            self.store.stop_cleanup()


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
