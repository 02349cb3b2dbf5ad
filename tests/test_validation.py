"""Bad input is refused with TypeError/ValueError before any SQL, and loses nothing."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token, table_rows

from sessionstore import DEFAULT_MAX_DATA_SIZE, MAX_TOKEN_LENGTH, AsyncStore, Store
from sessionstore.cleanup import NoCleanup

BAD_TOKENS: list[tuple[object, type[Exception]]] = [
    ("", ValueError),
    ("abc\x00def", ValueError),
    ("abc\ud800def", ValueError),
    ("x" * (MAX_TOKEN_LENGTH + 1), ValueError),
    (None, TypeError),
    (b"bytes-token", TypeError),
    (42, TypeError),
]
BAD_TOKEN_IDS = ["empty", "nul", "surrogate", "too-long", "none", "bytes", "int"]


@pytest.fixture
async def seeded(store: Both, db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """A table holding one live and one expired session; returns its exact rows."""
    await store.commit(new_token(), b"live", in_(60))
    await store.commit(new_token(), b"expired", in_(-60))
    return table_rows(db)


@pytest.mark.parametrize(("token", "error"), BAD_TOKENS, ids=BAD_TOKEN_IDS)
@pytest.mark.parametrize(
    "method", ["find", "commit", "delete", "touch", "create", "exists", "expiry"]
)
async def test_bad_token_is_refused_and_table_unchanged(
    store: Both,
    db: psycopg.Connection[Any],
    seeded: list[tuple[Any, ...]],
    method: str,
    token: object,
    error: type[Exception],
) -> None:
    args: tuple[object, ...] = {
        "commit": (token, b"data", in_(60)),
        "create": (token, b"data", in_(60)),
        "touch": (token, in_(60)),
    }.get(method, (token,))
    with pytest.raises(error) as info:
        await getattr(store, method)(*args)
    assert "token" in str(info.value)
    assert table_rows(db) == seeded


async def test_longest_token_allowed_round_trips(store: Both) -> None:
    # 4-byte characters: the worst case for PostgreSQL's btree entry limit.
    token = "\U0001f600" * MAX_TOKEN_LENGTH
    assert MAX_TOKEN_LENGTH >= 256
    await store.commit(token, b"data", in_(60))
    assert await store.find(token) == b"data"
    await store.delete(token)
    assert await store.find(token) is None


@pytest.mark.parametrize(
    ("data", "error"),
    [("text", TypeError), (None, TypeError), ([1, 2], TypeError), (123, TypeError)],
    ids=["str", "none", "list", "int"],
)
async def test_non_bytes_data_is_refused(
    store: Both,
    db: psycopg.Connection[Any],
    seeded: list[tuple[Any, ...]],
    data: Any,  # not bytes, on purpose: Any lets it past the type checker
    error: type[Exception],
) -> None:
    with pytest.raises(error, match="data must be bytes"):
        await store.commit(new_token(), data, in_(60))
    with pytest.raises(error, match="data must be bytes"):
        await store.create(new_token(), data, in_(60))
    assert table_rows(db) == seeded


@pytest.mark.parametrize(
    ("expiry", "error", "match"),
    [
        (dt.datetime.now() + dt.timedelta(hours=1), ValueError, "timezone-aware"),
        (dt.date.today(), TypeError, "datetime"),
        ("2030-01-01T00:00:00Z", TypeError, "datetime"),
        (1_900_000_000, TypeError, "datetime"),
        (None, TypeError, "datetime"),
    ],
    ids=["naive", "date", "str", "epoch", "none"],
)
async def test_bad_expiry_is_refused(
    store: Both,
    db: psycopg.Connection[Any],
    seeded: list[tuple[Any, ...]],
    expiry: Any,  # not an aware datetime, on purpose
    error: type[Exception],
    match: str,
) -> None:
    token = next(row[0] for row in seeded if row[1] == b"live")
    with pytest.raises(error, match=match):
        await store.commit(new_token(), b"data", expiry)
    with pytest.raises(error, match=match):
        await store.create(new_token(), b"data", expiry)
    with pytest.raises(error, match=match):
        await store.touch(token, expiry)
    assert table_rows(db) == seeded


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_max_data_size_is_enforced_before_sql(
    sessionstore_dsn: str, db: psycopg.Connection[Any], kind: str
) -> None:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    token = new_token()
    if kind == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1) as pool:
            sync_store = Store(pool, cleanup=NoCleanup(), max_data_size=10)
            sync_store.commit(token, b"x" * 10, in_(60))
            with pytest.raises(ValueError, match="at most 10"):
                sync_store.commit(token, b"x" * 11, in_(60))
            with pytest.raises(ValueError, match="at most 10"):
                sync_store.commit(token, memoryview(b"x" * 11), in_(60))
    else:
        async with AsyncConnectionPool(sessionstore_dsn, min_size=1) as apool:
            async_store = AsyncStore(apool, cleanup=NoCleanup(), max_data_size=10)
            await async_store.commit(token, b"x" * 10, in_(60))
            with pytest.raises(ValueError, match="at most 10"):
                await async_store.commit(token, bytearray(11), in_(60))
    assert [row[:2] for row in table_rows(db)] == [(token, b"x" * 10)]


async def test_the_default_max_data_size_is_1_mib(store: Both, db: psycopg.Connection[Any]) -> None:
    token = new_token()
    await store.commit(token, bytes(DEFAULT_MAX_DATA_SIZE), in_(60))
    assert await store.find(token) == bytes(1024 * 1024)
    with pytest.raises(ValueError, match="accepts at most 1048576"):
        await store.commit(new_token(), bytes(DEFAULT_MAX_DATA_SIZE + 1), in_(60))
    assert len(table_rows(db)) == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"table": ""}, ValueError),
        ({"table": "a\x00b"}, ValueError),
        ({"table": "x" * 64}, ValueError),
        ({"table": 5}, TypeError),
        ({"schema": ""}, ValueError),
        ({"max_data_size": -1}, ValueError),
        ({"max_data_size": "16M"}, TypeError),
    ],
    ids=["empty", "nul", "too-long", "int", "empty-schema", "negative-size", "str-size"],
)
def test_bad_store_options_are_refused(session_store: Store, kwargs: Any, error: type) -> None:
    pool = session_store._pool
    with pytest.raises(error):
        Store(pool, cleanup=NoCleanup(), **kwargs)


def test_wrong_pool_type_names_the_right_store(session_store: Store) -> None:
    from psycopg_pool import AsyncConnectionPool

    apool = AsyncConnectionPool("", open=False)
    with pytest.raises(TypeError, match="use AsyncStore"):
        Store(apool, cleanup=NoCleanup())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="use Store"):
        AsyncStore(session_store._pool, cleanup=NoCleanup())  # type: ignore[arg-type]


async def test_errors_and_logs_never_contain_the_token(
    store: Both, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-" + new_token()
    with pytest.raises(ValueError, match="NUL") as info:
        await store.commit(secret + "\x00", b"data", in_(60))
    assert secret not in str(info.value)
    assert secret not in caplog.text
