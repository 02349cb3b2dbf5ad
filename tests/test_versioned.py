"""Optimistic concurrency in the store: `find_versioned` and `update_versioned`, both facades.

The session manager's lost-update guarantee rests on these: a write made from a
version someone else has written since must write nothing, and say so.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token, table_rows

from sessionstore import AsyncStore, Store


async def test_find_versioned_returns_data_version_and_expiry(store: Both) -> None:
    token = new_token()
    expiry = in_(60).replace(microsecond=0)
    await store.commit(token, b"data", expiry)
    found = await store.find_versioned(token)
    assert found is not None
    assert (found.data, found.expiry) == (b"data", expiry)
    assert isinstance(found.version, int)


async def test_find_versioned_of_a_missing_or_expired_session_is_none(store: Both) -> None:
    token = new_token()
    await store.commit(token, b"old", in_(-1))
    assert await store.find_versioned(token) is None
    assert await store.find_versioned(new_token()) is None


async def test_every_write_changes_the_version(store: Both) -> None:
    token = new_token()
    await store.commit(token, b"a", in_(60))
    first = await store.find_versioned(token)
    assert first is not None
    assert await store.touch(token, in_(120)) is True
    second = await store.find_versioned(token)
    assert second is not None
    assert second.version != first.version


async def test_update_versioned_writes_at_the_version_read(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"a", in_(60))
    found = await store.find_versioned(token)
    assert found is not None
    later = in_(3600).replace(microsecond=0)
    assert await store.update_versioned(token, b"b", later, found.version) is True
    assert table_rows(db) == [(token, b"b", later)]


async def test_update_versioned_after_another_write_writes_nothing(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"a", in_(60))
    found = await store.find_versioned(token)
    assert found is not None
    await store.commit(token, b"theirs", in_(60))
    before = table_rows(db)
    assert await store.update_versioned(token, b"mine", in_(3600), found.version) is False
    assert table_rows(db) == before


async def test_update_versioned_never_brings_back_a_session(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"a", in_(60))
    found = await store.find_versioned(token)
    assert found is not None
    await store.delete(token)
    assert await store.update_versioned(token, b"mine", in_(3600), found.version) is False
    assert table_rows(db) == []


async def test_update_versioned_refuses_bad_input_before_any_sql(store: Both) -> None:
    with pytest.raises(TypeError, match="version must be an int"):
        await store.update_versioned(new_token(), b"x", in_(60), "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.update_versioned(new_token(), b"x", in_(60).replace(tzinfo=None), 1)


async def test_concurrent_saves_from_one_version_write_exactly_once(store: Both) -> None:
    """Many writers, combined or not, from the same version: one wins, the rest learn."""
    tokens = [new_token() for _ in range(8)]
    versions = {}
    for token in tokens:
        await store.commit(token, b"start", in_(60))
        found = await store.find_versioned(token)
        assert found is not None
        versions[token] = found.version
    writes = [(token, f"writer {i}".encode()) for i in range(6) for token in tokens]
    if isinstance(astore := store.store, AsyncStore):
        results = await asyncio.gather(
            *(astore.update_versioned(t, d, in_(60), versions[t]) for t, d in writes)
        )
    else:
        sstore = store.store
        assert isinstance(sstore, Store)
        with ThreadPoolExecutor(16) as executor:
            results = list(
                executor.map(
                    lambda w: sstore.update_versioned(w[0], w[1], in_(60), versions[w[0]]), writes
                )
            )
    for token in tokens:
        won = [data for (t, data), ok in zip(writes, results, strict=True) if t == token and ok]
        assert len(won) == 1
        assert await store.find(token) == won[0]


async def test_concurrent_versioned_finds_are_combined_and_each_answered(store: Both) -> None:
    live = [new_token() for _ in range(30)]
    for token in live:
        await store.commit(token, token.encode(), in_(60))
    tokens = [*live, *(new_token() for _ in range(30))]
    if isinstance(astore := store.store, AsyncStore):
        results = await asyncio.gather(*(astore.find_versioned(t) for t in tokens))
    else:
        sstore = store.store
        assert isinstance(sstore, Store)
        with ThreadPoolExecutor(16) as executor:
            results = list(executor.map(sstore.find_versioned, tokens))
    assert [None if r is None else r.data for r in results] == [
        *(t.encode() for t in live),
        *([None] * 30),
    ]
