"""Hostile input, generated: tokens, payloads, table and schema names (sync and async).

For every input the store either does the right thing (a full round trip) or raises
the documented `TypeError` or `ValueError` before any SQL, and the table is intact.

"Before any SQL" is checked on stores whose pool was never opened: a store that
validates first raises the documented error there, while one that reached for a
connection would raise `DatabaseError` (the pool is closed) instead.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token, table_rows
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import MAX_TOKEN_LENGTH, AsyncStore, DatabaseError, Store
from sessionstore._validate import MAX_IDENTIFIER_BYTES
from sessionstore.cleanup import NoCleanup

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Any code point at all: NUL, controls, lone surrogates, private use, unassigned.
ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=24)
NOT_STR = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.binary(max_size=8).map(bytearray),
    st.lists(st.text(max_size=3), max_size=2),
    st.text(max_size=3).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
#: Text PostgreSQL can store: any code point but NUL and lone surrogates.
STORABLE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=64
)
TOKENS = st.one_of(
    ANY_TEXT,
    STORABLE_TEXT,
    STORABLE_TEXT.map(str.strip).filter(bool),
    st.text(ANY_CHAR, min_size=1, max_size=4).map(lambda t: t.center(MAX_TOKEN_LENGTH, "x")),
    st.integers(MAX_TOKEN_LENGTH - 2, 8 * MAX_TOKEN_LENGTH).map(lambda n: "t" * n),
    st.integers(MAX_TOKEN_LENGTH - 2, MAX_TOKEN_LENGTH + 2).map(lambda n: "\U0001f600" * n),
    st.builds(lambda a, b: a + "\x00" + b, ANY_TEXT, ANY_TEXT),
    st.builds(lambda a, b: a + "\udc80" + b, ANY_TEXT, ANY_TEXT),
    NOT_STR,
)


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def token_error(token: object) -> type[Exception] | None:
    """The documented error for a token, or None if it is a valid one."""
    if not isinstance(token, str):
        return TypeError
    if not token or len(token) > MAX_TOKEN_LENGTH or "\x00" in token or has_surrogate(token):
        return ValueError
    return None


def name_error(name: object) -> type[Exception] | None:
    """The documented error for a table or schema name, or None if it is a valid one."""
    if not isinstance(name, str):
        return TypeError
    if not name or "\x00" in name or has_surrogate(name):
        return ValueError
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        return ValueError
    return None


@pytest.fixture
def unopened(sessionstore_dsn: str) -> tuple[Store, AsyncStore]:
    """Stores on pools that were never opened: any database access raises DatabaseError."""
    pool: ConnectionPool[Any] = ConnectionPool(sessionstore_dsn, open=False)
    apool: AsyncConnectionPool[Any] = AsyncConnectionPool(sessionstore_dsn, open=False)
    return Store(pool, cleanup=NoCleanup()), AsyncStore(apool, cleanup=NoCleanup())


async def call_unopened(
    unopened: tuple[Store, AsyncStore], is_async: bool, method: str, *args: Any
) -> None:
    sync_store, async_store = unopened
    if is_async:
        await getattr(async_store, method)(*args)
    else:
        getattr(sync_store, method)(*args)


@pytest.fixture
def seed(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """One live and one expired session nobody else touches; returns the table's rows."""
    for data, expiry in ((b"live", "1 hour"), (b"expired", "-1 hour")):
        db.execute(
            "INSERT INTO sessions VALUES (%s, %s, now() + %s::interval)",
            (new_token(), data, expiry),
        )
    return table_rows(db)


# ---------------------------------------------------------------------- tokens


@settings(FUZZ, max_examples=150)
@given(token=TOKENS)
async def test_hostile_tokens(
    store: Both,
    unopened: tuple[Store, AsyncStore],
    db: psycopg.Connection[Any],
    seed: list[tuple[Any, ...]],
    token: Any,
) -> None:
    error = token_error(token)
    event(f"refused with {error.__name__}" if error else "round trip")
    if error is not None:
        for method, args in (
            ("find", (token,)),
            ("commit", (token, b"data", in_(60))),
            ("delete", (token,)),
        ):
            with pytest.raises(error, match="token"):
                await call_unopened(unopened, store.is_async, method, *args)
            with pytest.raises(error, match="token"):
                await getattr(store, method)(*args)
    else:
        assert await store.find(token) is None
        await store.commit(token, b"payload", in_(60))
        assert await store.find(token) == b"payload"
        assert (await store.all())[token] == b"payload"
        await store.delete(token)
        assert await store.find(token) is None
        with pytest.raises(DatabaseError):  # a valid token goes for a connection
            await call_unopened(unopened, store.is_async, "find", token)
    assert table_rows(db) == seed


# ---------------------------------------------------------------------- payloads


def memoryviews() -> st.SearchStrategy[memoryview]:
    """Memoryviews of every shape: read-only, of wider items, 2-D, empty, strided, reversed."""
    raw = st.binary(max_size=64)
    return st.one_of(
        raw.map(lambda b: memoryview(b)),
        raw.map(lambda b: memoryview(b).toreadonly()),
        raw.map(lambda b: memoryview(b[: len(b) // 4 * 4]).cast("I")),
        raw.map(lambda b: memoryview(b[: len(b) // 8 * 8]).cast("d")),
        raw.filter(lambda b: len(b) >= 4).map(
            lambda b: memoryview(b[: len(b) // 4 * 4]).cast("B", (4, len(b) // 4))
        ),
        raw.map(lambda b: memoryview(bytearray(b))[1:]),
        raw.map(lambda b: memoryview(b)[::2]),
        raw.map(lambda b: memoryview(b)[::-1]),
    )


PAYLOADS = st.one_of(
    st.binary(max_size=256),
    st.binary(max_size=256).map(bytearray),
    memoryviews(),
    st.integers(0, 3).map(lambda n: bytes(range(256)) * (4**n)),
    st.text(ANY_CHAR, max_size=8),
    st.none(),
    st.integers(),
    st.lists(st.integers(0, 255), max_size=4),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(FUZZ, max_examples=150)
@given(data=PAYLOADS)
async def test_hostile_payloads(
    store: Both,
    unopened: tuple[Store, AsyncStore],
    db: psycopg.Connection[Any],
    seed: list[tuple[Any, ...]],
    data: Any,
) -> None:
    token = new_token()
    event(type(data).__name__)
    if isinstance(data, bytes | bytearray | memoryview):
        expected = data.tobytes() if isinstance(data, memoryview) else bytes(data)
        await store.commit(token, data, in_(60))
        assert await store.find(token) == expected
        assert (await store.all())[token] == expected
        await store.delete(token)
    else:
        with pytest.raises(TypeError, match="data must be bytes"):
            await call_unopened(unopened, store.is_async, "commit", token, data, in_(60))
        with pytest.raises(TypeError, match="data must be bytes"):
            await store.commit(token, data, in_(60))
    assert table_rows(db) == seed


@pytest.mark.parametrize(
    "data",
    [
        memoryview(bytes(range(16)))[::2],
        memoryview(bytes(range(16)))[::-1],
        memoryview(bytes(range(16))).cast("I")[::2],
        memoryview(bytearray(range(16)))[1::3],
    ],
    ids=["strided", "reversed", "strided-wide-items", "strided-bytearray"],
)
async def test_non_contiguous_memoryviews_round_trip(
    store: Both, db: psycopg.Connection[Any], seed: list[tuple[Any, ...]], data: memoryview
) -> None:
    # psycopg can't send a non-contiguous view as it is; the store copies it to bytes,
    # so it is stored exactly as its tobytes(), never refused.
    assert not data.c_contiguous
    token = new_token()
    await store.commit(token, data, in_(60))
    assert await store.find(token) == data.tobytes()
    assert (await store.all())[token] == data.tobytes()
    await store.delete(token)
    assert table_rows(db) == seed


# ---------------------------------------------------------------------- names


@pytest.fixture
def keywords(db: psycopg.Connection[Any]) -> list[str]:
    """Every keyword of the server at hand, reserved or not."""
    return [row[0] for row in db.execute("SELECT word FROM pg_get_keywords()").fetchall()]


def names(keywords: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(ANY_CHAR, max_size=16),
        STORABLE_TEXT.map(lambda t: t[:20]),
        st.sampled_from(keywords),
        st.sampled_from(keywords).map(str.upper),
        st.text(ANY_CHAR, min_size=1, max_size=3).map(lambda t: t * 30),  # near 63 bytes
        st.sampled_from(['"', '""', ".", " ", "a.b", "a;b", "$1", "%s", "'", "\\", "-- x"]),
    )


#: Relations of the default table: a name that collides with one is not hostile, it
#: is the same table.
DEFAULT_RELATIONS = {"sessions", "sessions_pkey", "sessions_expiry_idx"}


def existing_schemas(db: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in db.execute("SELECT nspname FROM pg_namespace").fetchall()}


@settings(FUZZ, max_examples=60)
@given(data=st.data())
async def test_hostile_table_and_schema_names(
    store: Both,
    unopened: tuple[Store, AsyncStore],
    db: psycopg.Connection[Any],
    seed: list[tuple[Any, ...]],
    keywords: list[str],
    data: st.DataObject,
) -> None:
    # Mostly text: a non-str table name is refused whatever else is drawn.
    not_str = data.draw(st.integers(0, 9), label="non-str table") == 0
    table = data.draw(NOT_STR if not_str else names(keywords), label="table")
    schema = data.draw(st.one_of(st.none(), st.just("public"), names(keywords)), label="schema")
    if schema is None or schema == "public":
        assume(not isinstance(table, str) or table not in DEFAULT_RELATIONS)
    # Known bug, pinned by test_percent_in_a_name_works below: drop this when it passes.
    factory: Any = AsyncStore if store.is_async else Store
    error = name_error(table) or (None if schema is None else name_error(schema))
    pool = store.store._pool
    event(f"refused with {error.__name__}" if error else "valid names")
    if error is not None:
        with pytest.raises(error, match="name"):
            factory(pool, table=table, schema=schema, cleanup=NoCleanup())
        assert table_rows(db) == seed
        return

    schemas_before = existing_schemas(db)
    made = Both(factory(pool, table=table, schema=schema, cleanup=NoCleanup()))
    try:
        try:
            assert await made.create_table() is True
        except DatabaseError:
            # PostgreSQL reserves the pg_ prefix for its own schemas (pg_catalog,
            # pg_toast, pg_temp...): creating anything there is refused, cleanly.
            assert schema is not None
            assert schema.startswith("pg_")
            event("refused by PostgreSQL: pg_ schema")
        else:
            assert await made.create_table() is False
            token = new_token()
            await made.commit(token, b"data", in_(60))
            assert await made.find(token) == b"data"
            assert await made.all() == {token: b"data"}
            await made.commit(new_token(), b"old", in_(-60))
            assert await made.purge_expired() == 1
            await made.delete(token)
            assert await made.all() == {}
            assert table_rows(db, table, schema) == []
    finally:
        parts = (table,) if schema is None else (schema, table)
        db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*parts)))
        if schema is not None and schema not in schemas_before:
            db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    assert table_rows(db) == seed


@pytest.mark.parametrize(("table", "schema"), [("a%b", None), ("t", "p%s"), ("%s%%", "%")])
async def test_percent_in_a_name_works(
    store: Both, db: psycopg.Connection[Any], table: str, schema: str | None
) -> None:
    factory: Any = AsyncStore if store.is_async else Store
    made = Both(factory(store.store._pool, table=table, schema=schema, cleanup=NoCleanup()))
    try:
        assert await made.create_table() is True
        token = new_token()
        await made.commit(token, b"data", in_(60))
        assert await made.find(token) == b"data"
        assert await made.all() == {token: b"data"}
        assert await made.purge_expired() == 0
        await made.delete(token)
    finally:
        parts = (table,) if schema is None else (schema, table)
        db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*parts)))
        if schema is not None:
            db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
