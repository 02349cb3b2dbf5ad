"""`update`: rewrite a live session, never create or revive one (both facades)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token, table_rows
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, OwnersNotEnabledError, Store
from sessionstore._core import SessionCore, hash_token
from sessionstore.cleanup import NoCleanup


def test_update_and_prefix_delete_reuse_the_statements_rendered_for_the_store() -> None:
    """No builder composes SQL per call: each statement is rendered once, with its store."""
    core = SessionCore("odd %table", "a schema", owners=True)
    first, second = core.update("a", b"", in_(60)), core.update("b", b"", in_(60), "owner")
    assert first.query is second.query is core.sql.update
    assert b'"a schema"."odd %%table"' in first.query
    assert b"owner = COALESCE" in first.query
    prefix = next(core.delete_prefix_steps("p"))
    assert prefix.query is next(core.delete_prefix_steps("q")).query is core.sql.delete_prefix_batch


async def test_update_rewrites_a_live_session(store: Both, db: psycopg.Connection[Any]) -> None:
    token = new_token()
    await store.commit(token, b"old", in_(60))
    later = in_(3600).replace(microsecond=0)
    assert await store.update(token, b"new", later) is True
    assert table_rows(db) == [(token, b"new", later)]


async def test_update_never_creates_a_missing_session(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    assert await store.update(new_token(), b"data", in_(60)) is False
    assert table_rows(db) == []


async def test_update_never_revives_an_expired_session(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"stale", in_(-60))
    before = table_rows(db)
    assert await store.update(token, b"fresh", in_(60)) is False
    assert table_rows(db) == before
    assert await store.find(token) is None


async def test_update_checks_its_arguments_before_any_sql(store: Both) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await store.update(new_token(), b"data", in_(60).replace(tzinfo=None))
    with pytest.raises(TypeError):
        await store.update(new_token(), "text", in_(60))  # type: ignore[arg-type]
    with pytest.raises(OwnersNotEnabledError):
        await store.update(new_token(), b"data", in_(60), owner="alice")


@pytest.fixture(params=["sync", "async"])
async def owned(request: pytest.FixtureRequest, sessionstore_dsn: str) -> AsyncIterator[Any]:
    """A store with ``owners=True`` and hashed tokens, on either facade."""
    kwargs = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1, max_size=2, kwargs=kwargs) as pool:
            store = Both(Store(pool, cleanup=NoCleanup(), owners=True, hash_tokens=True))
            await store.create_table()
            yield store
    else:
        async with AsyncConnectionPool(
            sessionstore_dsn, min_size=1, max_size=2, kwargs=kwargs
        ) as apool:
            store = Both(AsyncStore(apool, cleanup=NoCleanup(), owners=True, hash_tokens=True))
            await store.create_table()
            yield store


async def test_update_sets_or_keeps_the_owner_and_hashes_the_key(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await owned.create(token, b"anon", in_(60))
    assert await owned.update(token, b"mine", in_(60), owner="alice") is True
    assert await owned.update(token, b"still", in_(60)) is True  # None keeps the owner
    row = db.execute("SELECT token, data, owner FROM sessions").fetchone()
    assert row == (hash_token(token), b"still", "alice")
    assert [s.key for s in await owned.sessions_of("alice")] == [hash_token(token)]
