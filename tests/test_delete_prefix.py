"""`delete_prefix`: deleting every key that starts with a prefix, on both facades."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from _support import Both, in_, table_rows
from psycopg_pool import ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore.cleanup import NoCleanup


async def delete_prefix(store: Both, prefix: Any, **options: Any) -> int:
    if isinstance(store.store, AsyncStore):
        return await store.store.delete_prefix(prefix, **options)
    return store.store.delete_prefix(prefix, **options)


@pytest.mark.parametrize("batch_size", [1, 4, 5000])
async def test_deletes_the_prefixed_keys_live_or_expired_and_counts(
    store: Both, db: psycopg.Connection[Any], batch_size: int
) -> None:
    for n in range(9):
        await store.commit(f"app:sessions:{n}", b"x", in_(60 if n % 3 else -60))
        await store.commit(f"app:cache:{n}", b"x", in_(60))
    await store.commit("app:sessionsX", b"x", in_(60))
    await store.commit("other:sessions:1", b"x", in_(60))
    assert await delete_prefix(store, "app:sessions:", batch_size=batch_size) == 9
    left = sorted(row[0] for row in table_rows(db))
    assert left == sorted(
        [*(f"app:cache:{n}" for n in range(9)), "app:sessionsX", "other:sessions:1"]
    )
    assert await delete_prefix(store, "app:sessions:") == 0


async def test_like_wildcards_are_plain_characters(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    await store.commit("a%b:1", b"x", in_(60))
    await store.commit("axb:1", b"x", in_(60))
    await store.commit("a_b:1", b"x", in_(60))
    await store.commit("a\\b:1", b"x", in_(60))
    assert await delete_prefix(store, "a%") == 1
    assert await delete_prefix(store, "a_") == 1
    assert await delete_prefix(store, "a\\") == 1
    assert [row[0] for row in table_rows(db)] == ["axb:1"]


@pytest.mark.parametrize(
    ("prefix", "error"), [(None, TypeError), ("", ValueError), ("a\x00", ValueError)]
)
async def test_bad_prefixes_fail_before_any_sql(
    store: Both, db: psycopg.Connection[Any], prefix: Any, error: type[Exception]
) -> None:
    await store.commit("keep:1", b"x", in_(60))
    with pytest.raises(error):
        await delete_prefix(store, prefix)
    with pytest.raises(ValueError, match="at least 1"):
        await delete_prefix(store, "keep", batch_size=0)
    assert len(table_rows(db)) == 1


def test_a_hashing_store_refuses_clearly(sessionstore_dsn: str) -> None:
    with (
        ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool,
        Store(pool, hash_tokens=True, cleanup=NoCleanup()) as hashed,
        pytest.raises(ValueError, match="hash_tokens=False"),
    ):
        hashed.delete_prefix("app:")


def test_a_database_failure_is_a_database_error(
    session_store: Store, db: psycopg.Connection[Any]
) -> None:
    db.execute("ALTER TABLE sessions RENAME TO sessions_gone")
    with pytest.raises(DatabaseError):
        session_store.delete_prefix("app:")
