"""DDL text, create_table, and table/schema names that try to break out of quoting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token, table_rows
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore.cleanup import NoCleanup
from sessionstore.schema import ddl

SEED_DDL = """\
CREATE TABLE sessions (
\ttoken TEXT PRIMARY KEY,
\tdata BYTEA NOT NULL,
\texpiry TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_expiry_idx ON sessions (expiry);
"""

HOSTILE_NAMES = [
    'my"table',
    "drop; DROP TABLE sessions; --",
    "dotted.name",
    "CamelCase",
    "with space",
    "sessions'--",
    "ünïcødé_tâble",
    "user",
    "x" * 63,
]


def relations(db: psycopg.Connection[Any]) -> set[tuple[str, str, str]]:
    """(schema, name, kind) of every user relation."""
    rows = db.execute(
        "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    ).fetchall()
    return set(rows)


def test_default_ddl_is_byte_for_byte_the_seed() -> None:
    assert ddl() == SEED_DDL


def test_ddl_quotes_what_needs_quoting() -> None:
    text = ddl('we"ird', "My Schema", if_not_exists=True)
    assert 'CREATE SCHEMA IF NOT EXISTS "My Schema";' in text
    assert 'CREATE TABLE IF NOT EXISTS "My Schema"."we""ird" (' in text
    assert 'CREATE INDEX IF NOT EXISTS "we""ird_expiry_idx" ON "My Schema"."we""ird"' in text


@pytest.fixture
def pool(sessionstore_dsn: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool:
        yield pool


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_table_name_names_exactly_that_relation(
    pool: ConnectionPool[Any], db: psycopg.Connection[Any], name: str
) -> None:
    before = relations(db)
    with Store(pool, table=name, cleanup=NoCleanup()) as store:
        assert store.create_table() is True
        token = new_token()
        store.commit(token, b"data", in_(60))
        assert store.find(token) == b"data"
        assert store.all() == {token: b"data"}
    created = relations(db) - before
    assert ("public", name, "r") in created
    assert {kind for _, _, kind in created} == {"r", "i"}  # table, pkey and expiry index
    assert table_rows(db, name) == [(token, b"data", table_rows(db, name)[0][2])]
    assert table_rows(db) == []  # the default table is intact and untouched


@pytest.mark.parametrize("schema", ["auth", "Auth Schema", 'sch"ema; --'])
async def test_schema_is_created_and_used(
    sessionstore_dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    async with (
        AsyncConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as apool,
        AsyncStore(apool, table="web_sessions", schema=schema, cleanup=NoCleanup()) as store,
    ):
        assert await store.create_table() is True
        assert await store.create_table() is False
        token = new_token()
        await store.commit(token, b"data", in_(60))
        assert await store.find(token) == b"data"
    assert [row[:2] for row in table_rows(db, "web_sessions", schema)] == [(token, b"data")]
    assert table_rows(db) == []


async def test_create_table_is_idempotent(store: Both, db: psycopg.Connection[Any]) -> None:
    # The plugin created the default table already.
    token = new_token()
    await store.commit(token, b"kept", in_(60))
    assert await store.create_table() is False
    assert await store.find(token) == b"kept"
    db.execute("DROP INDEX sessions_expiry_idx")
    assert await store.create_table() is True  # the missing index is recreated
    assert ("public", "sessions_expiry_idx", "i") in relations(db)


def test_concurrent_create_table_from_many_threads(pool: ConnectionPool[Any]) -> None:
    """Racing plain CREATE TABLE IF NOT EXISTS raises UniqueViolation; create_table doesn't."""
    pool.resize(min_size=8, max_size=8)
    store = Store(pool, table="raced", schema="new_schema", cleanup=NoCleanup())
    barrier = threading.Barrier(8)
    results: list[object] = []

    def create() -> None:
        barrier.wait()
        try:
            results.append(store.create_table())
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(repr, results)) == ["False"] * 7 + ["True"]


def test_create_table_on_existing_table_needs_no_ddl_rights(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    db.execute("CREATE ROLE app_user LOGIN")
    db.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON sessions TO app_user")
    db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    dsn = psycopg.conninfo.make_conninfo(sessionstore_dsn, user="app_user")
    try:
        with (
            ConnectionPool(dsn, min_size=1, kwargs={"autocommit": True}) as app_pool,
            Store(app_pool, cleanup=NoCleanup()) as store,
        ):
            assert store.create_table() is False
            token = new_token()
            store.commit(token, b"data", in_(60))
            store.commit(new_token(), b"old", in_(-1))
            assert store.find(token) == b"data"
            assert store.all() == {token: b"data"}
            assert store.purge_expired() == 1
            store.delete(token)
            with pytest.raises(DatabaseError, match="InsufficientPrivilege"):
                Store(app_pool, table="other", cleanup=NoCleanup()).create_table()
    finally:
        db.execute(sql.SQL("DROP OWNED BY app_user"))
        db.execute("DROP ROLE app_user")


def test_create_table_in_an_existing_schema_needs_no_database_rights(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """An owner of schema auth, without CREATE on the database, can create its table."""
    db.execute("CREATE ROLE schema_owner LOGIN")
    db.execute("CREATE SCHEMA auth AUTHORIZATION schema_owner")
    db.execute(
        sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db.info.dbname))
    )
    dsn = psycopg.conninfo.make_conninfo(sessionstore_dsn, user="schema_owner")
    try:
        with (
            ConnectionPool(dsn, min_size=1, kwargs={"autocommit": True}) as owner_pool,
            Store(owner_pool, schema="auth", cleanup=NoCleanup()) as store,
        ):
            assert store.create_table() is True
            assert store.create_table() is False
        assert table_rows(db, "sessions", "auth") == []
    finally:
        db.execute("DROP SCHEMA auth CASCADE")
        db.execute("DROP OWNED BY schema_owner")
        db.execute("DROP ROLE schema_owner")
