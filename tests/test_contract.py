"""The Go original's contract, row by row, on both facades (one body, sync and async).

Mirrors scs/pgxstore's own test suite: find, find missing, save new, save updated,
expiry, delete; and the Go original's semantics (README.md, "From Go's pgxstore"):
expiry judged by the database's clock, commit an upsert where the last writer wins,
deleting a missing token no error, `all()` the live sessions only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from _support import Both, db_now, in_, new_token, table_rows

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore._core import SessionCore


async def test_find_returns_the_committed_data(store: Both) -> None:
    token = new_token()
    await store.commit(token, b"encoded_data", in_(60))
    assert await store.find(token) == b"encoded_data"


async def test_find_missing_returns_none(store: Both) -> None:
    assert await store.find("missing_session_token") is None


async def test_find_empty_payload_is_empty_bytes_not_none(store: Both) -> None:
    token = new_token()
    await store.commit(token, b"", in_(60))
    result = await store.find(token)
    assert result == b""
    assert result is not None


async def test_commit_new_writes_the_row(store: Both, db: psycopg.Connection[Any]) -> None:
    token = new_token()
    expiry = in_(60).replace(microsecond=0)
    await store.commit(token, b"encoded_data", expiry)
    assert table_rows(db) == [(token, b"encoded_data", expiry)]


async def test_commit_updated_replaces_data_and_expiry(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"encoded_data", in_(60))
    later = in_(3600).replace(microsecond=0)
    await store.commit(token, b"new_encoded_data", later)
    assert table_rows(db) == [(token, b"new_encoded_data", later)]
    assert await store.find(token) == b"new_encoded_data"


async def test_commit_accepts_bytearray_and_memoryview(store: Both) -> None:
    a, b = new_token(), new_token()
    await store.commit(a, bytearray(b"from bytearray"), in_(60))
    await store.commit(b, memoryview(b"xx from memoryview")[3:], in_(60))
    assert await store.find(a) == b"from bytearray"
    assert await store.find(b) == b"from memoryview"


async def test_expired_session_is_not_found_but_stays_until_purged(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"encoded_data", in_(-1))
    assert await store.find(token) is None
    assert len(table_rows(db)) == 1  # find does not delete; cleanup does


async def test_session_expires_by_the_database_clock(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"encoded_data", db_now(db) + dt.timedelta(milliseconds=300))
    assert await store.find(token) == b"encoded_data"
    await asyncio.sleep(0.4)
    assert await store.find(token) is None


async def test_expiry_boundary_is_exclusive(store: Both, db: psycopg.Connection[Any]) -> None:
    """Expiry equal to the database's current_timestamp is expired; a microsecond later is not.

    current_timestamp is fixed for a transaction, so the store's own find statement
    runs inside one to hit the boundary exactly.
    """
    at, after = new_token(), new_token()
    core = SessionCore()
    with db.transaction():
        row = db.execute("SELECT current_timestamp").fetchone()
        assert row is not None
        now = row[0]
        await store.commit(at, b"at", now)
        await store.commit(after, b"after", now + dt.timedelta(microseconds=1))
        found = {
            token: db.execute(core.find(token).query, core.find(token).params).fetchone()
            for token in (at, after)
        }
    assert found == {at: None, after: (b"after",)}
    assert await store.find(at) is None


async def test_delete_removes_the_session(store: Both, db: psycopg.Connection[Any]) -> None:
    token = new_token()
    await store.commit(token, b"encoded_data", in_(60))
    await store.delete(token)
    assert await store.find(token) is None
    assert table_rows(db) == []


async def test_delete_missing_is_a_no_op(store: Both) -> None:
    other = new_token()
    await store.commit(other, b"kept", in_(60))
    await store.delete("missing_session_token")
    assert await store.find(other) == b"kept"


async def test_all_returns_live_sessions_only(store: Both) -> None:
    live = {new_token(): b"one", new_token(): b"two", new_token(): b""}
    for token, data in live.items():
        await store.commit(token, data, in_(60))
    await store.commit(new_token(), b"expired", in_(-1))
    assert await store.all() == live


async def test_all_on_empty_table_is_an_empty_dict(store: Both) -> None:
    result = await store.all()
    assert result == {}
    assert isinstance(result, dict)


async def test_purge_expired_deletes_only_expired_and_counts(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    live = new_token()
    await store.commit(live, b"live", in_(60))
    for _ in range(3):
        await store.commit(new_token(), b"old", in_(-5))
    assert await store.purge_expired() == 3
    assert [row[0] for row in table_rows(db)] == [live]
    assert await store.purge_expired() == 0


@pytest.mark.parametrize("size", [0, 1_000_000, 16_000_000], ids=["0B", "1MB", "16MB"])
async def test_payload_sizes_round_trip(open_store: Any, size: int) -> None:
    store: Both = open_store(max_data_size=32 * 1024 * 1024)  # beyond the 1 MiB default
    token = new_token()
    data = bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)
    await store.commit(token, data, in_(60))
    assert await store.find(token) == data


async def test_database_failure_raises_database_error_not_none(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"x", in_(60))
    db.execute("DROP TABLE sessions")
    for call in (
        store.find(token),
        store.commit(token, b"x", in_(60)),
        store.delete(token),
        store.all(),
        store.purge_expired(),
        store.touch(token, in_(60)),
        store.create(token, b"x", in_(60)),
        store.exists(token),
        store.expiry(token),
        store.clear(),
    ):
        with pytest.raises(DatabaseError) as info:
            await call
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
        assert info.value.sqlstate == "42P01"
        assert token not in str(info.value)


def test_default_pool_without_autocommit_commits(sessionstore_dsn: str) -> None:
    """A pool as most code builds it (no autocommit) still saves every write."""
    from psycopg_pool import ConnectionPool

    from sessionstore import Store
    from sessionstore.cleanup import NoCleanup

    token = new_token()
    with ConnectionPool(sessionstore_dsn, min_size=1, max_size=2) as pool:
        with Store(pool, cleanup=NoCleanup()) as store:
            store.commit(token, b"saved", in_(60))
            assert store.find(token) == b"saved"
        with psycopg.connect(sessionstore_dsn) as other:
            assert table_rows(other)[0][:2] == (token, b"saved")


def test_unreachable_server_raises_database_error() -> None:
    from psycopg_pool import ConnectionPool

    from sessionstore import Store
    from sessionstore.cleanup import NoCleanup

    t0 = time.monotonic()
    with (
        ConnectionPool(
            "host=127.0.0.1 port=1 connect_timeout=1", min_size=1, timeout=1, open=False
        ) as pool,
        Store(pool, cleanup=NoCleanup()) as store,
        pytest.raises(DatabaseError) as info,
    ):
        store.find(new_token())
    assert info.value.operation == "find"
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
async def test_iter_all_streams_the_live_sessions(
    store: Both, db: psycopg.Connection[Any], batch_size: int
) -> None:
    db.execute(
        "INSERT INTO sessions SELECT 'live-' || i, int4send(i), now() + interval '1 hour' "
        "FROM generate_series(1, 500) AS i"
    )
    await store.commit(new_token(), b"expired", in_(-1))
    seen = await store.walk(batch_size=batch_size)
    assert seen == await store.all()
    assert len(seen) == 500


async def test_iter_all_refuses_a_bad_batch_size(store: Both) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await store.walk(batch_size=0)


# The session lifecycle beyond the Go interface: touch, create, exists, expiry, clear.


async def test_touch_moves_a_live_sessions_expiry_and_keeps_its_data(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"kept", in_(60))
    later = in_(7200).replace(microsecond=0)
    assert await store.touch(token, later) is True
    assert table_rows(db) == [(token, b"kept", later)]


async def test_touch_never_brings_back_an_expired_or_missing_session(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"gone", in_(-60))
    before = table_rows(db)
    assert await store.touch(token, in_(3600)) is False
    assert await store.touch(new_token(), in_(3600)) is False
    assert table_rows(db) == before  # nothing written
    assert await store.find(token) is None


async def test_concurrent_touches_are_combined_and_each_answered(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    live = [new_token() for _ in range(40)]
    for token in live:
        await store.commit(token, b"x", in_(60))
    later = in_(7200).replace(microsecond=0)
    tokens = [*live, *(new_token() for _ in range(40))]
    if isinstance(astore := store.store, AsyncStore):
        results = await asyncio.gather(*(astore.touch(t, later) for t in tokens))
    else:
        sstore = store.store
        assert isinstance(sstore, Store)
        with ThreadPoolExecutor(16) as executor:
            results = list(executor.map(lambda t: sstore.touch(t, later), tokens))
    assert results == [True] * 40 + [False] * 40
    assert {row[2] for row in table_rows(db)} == {later}


async def test_create_inserts_a_new_session(store: Both, db: psycopg.Connection[Any]) -> None:
    token = new_token()
    expiry = in_(60).replace(microsecond=0)
    assert await store.create(token, b"new", expiry) is True
    assert table_rows(db) == [(token, b"new", expiry)]


async def test_create_never_overwrites_a_live_session(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    token = new_token()
    await store.commit(token, b"first", in_(60))
    before = table_rows(db)
    assert await store.create(token, b"second", in_(3600)) is False
    assert table_rows(db) == before


async def test_create_replaces_an_expired_session(store: Both, db: psycopg.Connection[Any]) -> None:
    token = new_token()
    await store.commit(token, b"stale", in_(-60))
    expiry = in_(60).replace(microsecond=0)
    assert await store.create(token, b"fresh", expiry) is True
    assert table_rows(db) == [(token, b"fresh", expiry)]


async def test_concurrent_creates_of_one_token_have_one_winner(store: Both) -> None:
    token = new_token()
    payloads = [b"%d" % n for n in range(20)]
    if isinstance(astore := store.store, AsyncStore):
        results = await asyncio.gather(*(astore.create(token, p, in_(60)) for p in payloads))
    else:
        sstore = store.store
        assert isinstance(sstore, Store)
        with ThreadPoolExecutor(8) as executor:
            results = list(executor.map(lambda p: sstore.create(token, p, in_(60)), payloads))
    assert results.count(True) == 1
    assert await store.find(token) == payloads[results.index(True)]


async def test_exists_and_expiry_see_live_sessions_only(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    live, old = new_token(), new_token()
    # An expiry in another time zone comes back as the same instant, in UTC.
    expiry = in_(60).replace(microsecond=0).astimezone(dt.timezone(dt.timedelta(hours=-7)))
    await store.commit(live, b"x", expiry)
    await store.commit(old, b"x", in_(-60))
    assert await store.exists(live) is True
    assert await store.exists(old) is False
    assert await store.exists(new_token()) is False
    got = await store.expiry(live)
    assert got == expiry
    assert got.tzinfo is dt.UTC
    assert await store.expiry(old) is None
    assert await store.expiry(new_token()) is None


@pytest.mark.parametrize("batch_size", [1, 7, 5000])
async def test_clear_deletes_every_session_and_counts(
    store: Both, db: psycopg.Connection[Any], batch_size: int
) -> None:
    for n in range(30):
        await store.commit(new_token(), b"x", in_(60 if n % 3 else -60))
    assert await store.clear(batch_size=batch_size) == 30
    assert table_rows(db) == []
    assert await store.clear() == 0
