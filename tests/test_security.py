"""Hashed tokens, least privilege, fork safety, and what logs and errors may show."""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _support import Both, in_, new_token, table_rows, wait_until
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, ForkedProcessError, Store
from sessionstore._core import hash_token
from sessionstore.cleanup import NoCleanup, ThreadCleanup


@pytest.fixture
def pool(sessionstore_dsn: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool:
        yield pool


def test_hash_token_matches_scs_hash_token_in_store() -> None:
    # sha256("abc") = ba7816bf...15ad, unpadded base64url, as Go's
    # base64.RawURLEncoding.EncodeToString(sha256.Sum256([]byte(token))).
    assert hash_token("abc") == "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
    assert len(hash_token(new_token())) == 43
    assert hash_token("ü") == hash_token("\u00fc")  # UTF-8 bytes of the text


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_hashed_tokens_store_only_the_digest(
    sessionstore_dsn: str, db: psycopg.Connection[Any], kind: str
) -> None:
    token = new_token()

    async def exercise(store: Any, call: Any) -> None:
        await call(store.commit(token, b"secret-data", in_(60)))
        assert await call(store.find(token)) == b"secret-data"
        assert await call(store.all()) == {hash_token(token): b"secret-data"}
        assert [row[0] for row in table_rows(db)] == [hash_token(token)]
        await call(store.delete(token))
        assert await call(store.find(token)) is None

    async def identity(value: Any) -> Any:
        return value

    async def awaited(value: Any) -> Any:
        return await value

    if kind == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1) as pool:
            await exercise(Store(pool, cleanup=NoCleanup(), hash_tokens=True), identity)
    else:
        async with AsyncConnectionPool(sessionstore_dsn, min_size=1) as apool:
            await exercise(AsyncStore(apool, cleanup=NoCleanup(), hash_tokens=True), awaited)


def test_leaked_table_gives_no_usable_session(pool: ConnectionPool[Any]) -> None:
    hashed = Store(pool, cleanup=NoCleanup(), hash_tokens=True)
    plain = Store(pool, cleanup=NoCleanup())
    token = new_token()
    hashed.commit(token, b"data", in_(60))
    (stored,) = plain.all()
    assert stored != token
    assert plain.find(token) is None  # the raw token isn't in the table
    assert hashed.find(stored) is None  # nor does presenting the stored value work


def test_hashed_tokens_are_validated_first(pool: ConnectionPool[Any]) -> None:
    store = Store(pool, cleanup=NoCleanup(), hash_tokens=True)
    with pytest.raises(ValueError, match="NUL"):
        store.find("a\x00b")


def test_least_privilege_role_runs_every_operation_and_the_cleanup(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    db.execute("CREATE ROLE web LOGIN")
    db.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON sessions TO web")
    db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    dsn = psycopg.conninfo.make_conninfo(sessionstore_dsn, user="web")
    cleanup = ThreadCleanup(interval=0.05, run_on_start=True)
    try:
        with (
            ConnectionPool(dsn, min_size=1, kwargs={"autocommit": True}) as web_pool,
            Store(web_pool, cleanup=cleanup) as store,
        ):
            store.commit(new_token(), b"old", in_(-1))
            token = new_token()
            store.commit(token, b"live", in_(60))
            assert store.find(token) == b"live"
            assert store.all() == {token: b"live"}
            assert store.touch(token, in_(120)) is True
            assert store.create(token, b"other", in_(60)) is False
            assert store.exists(token) is True
            assert store.expiry(token) is not None
            spare = new_token()
            assert store.create(spare, b"spare", in_(60)) is True
            wait_until(lambda: cleanup.stats.rows_deleted == 1)
            assert cleanup.stats.errors == 0
            store.delete(token)
            assert store.clear() == 1  # the spare
            other = Store(web_pool, table="not_there", cleanup=NoCleanup())
            with pytest.raises(DatabaseError, match="InsufficientPrivilege") as info:
                other.create_table()
            assert "migrate" in str(info.value)  # says how to fix it
    finally:
        db.execute("DROP OWNED BY web")
        db.execute("DROP ROLE web")


def test_forked_child_gets_a_clear_error_and_parent_is_unaffected(
    pool: ConnectionPool[Any],
) -> None:
    store = Store(pool, cleanup=NoCleanup())
    token = new_token()
    store.commit(token, b"parent", in_(60))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what happened through the pipe, never return
        try:
            store.find(token)
            message = "no error"
        except ForkedProcessError as exc:
            message = f"ForkedProcessError: {exc}"
        except BaseException as exc:
            message = f"wrong error: {exc!r}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    assert message.startswith("ForkedProcessError: this store was created in process")
    assert "os.fork()" in message
    assert store.find(token) == b"parent"


async def test_no_token_or_payload_in_any_log_line_or_error(
    sessionstore_dsn: str, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token, payload = new_token(), b"payload-secret-" + new_token().encode()
    errors: list[str] = []
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=1, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        await store.commit(token, payload, in_(-1))
        await store.find(token)
        await store.all()
        await store.purge_expired()
        db.execute("ALTER TABLE sessions RENAME TO gone")
        for call in (store.find(token), store.commit(token, payload, in_(60)), store.delete(token)):
            with pytest.raises(DatabaseError) as info:
                await call
            errors.append(str(info.value))
    for bad in ("", "\x00", "x" * 10_000):
        with pytest.raises(ValueError, match="token") as bad_info:
            await store.find(token + bad if bad else bad)
        errors.append(str(bad_info.value))
    text = caplog.text + "\n".join(errors)
    assert token not in text
    assert payload.decode() not in text


def test_create_table_hint_is_given_only_for_missing_privileges(sessionstore_dsn: str) -> None:
    """A pool timeout has nothing to do with DDL rights: no "run migrate" advice."""
    with ConnectionPool(
        sessionstore_dsn, min_size=1, max_size=1, timeout=0.2, kwargs={"autocommit": True}
    ) as busy_pool:
        store = Store(busy_pool, table="not_there", cleanup=NoCleanup())
        with busy_pool.connection(), pytest.raises(DatabaseError, match="PoolTimeout") as info:
            store.create_table()
    assert "migrate" not in str(info.value)
    assert "DDL" not in str(info.value)


async def test_async_create_table_hint_is_given_only_for_missing_privileges(
    sessionstore_dsn: str,
) -> None:
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=1, max_size=1, timeout=0.2, kwargs={"autocommit": True}
    ) as busy_pool:
        store = AsyncStore(busy_pool, table="not_there", cleanup=NoCleanup())
        async with busy_pool.connection():
            with pytest.raises(DatabaseError, match="PoolTimeout") as info:
                await store.create_table()
    assert "migrate" not in str(info.value)


def test_a_purge_only_role_needs_select_update_and_delete(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """The purge locks the rows it picks (FOR UPDATE SKIP LOCKED), which takes UPDATE."""
    db.execute("CREATE ROLE janitor LOGIN")
    db.execute("GRANT SELECT, DELETE ON sessions TO janitor")
    db.execute("INSERT INTO sessions VALUES ('old', '', now() - interval '1 hour')")
    dsn = psycopg.conninfo.make_conninfo(sessionstore_dsn, user="janitor")
    try:
        with ConnectionPool(dsn, min_size=1, kwargs={"autocommit": True}) as janitor_pool:
            store = Store(janitor_pool, cleanup=NoCleanup())
            with pytest.raises(DatabaseError, match="InsufficientPrivilege"):
                store.purge_expired()
            db.execute("GRANT UPDATE ON sessions TO janitor")
            assert store.purge_expired() == 1
    finally:
        db.execute("DROP OWNED BY janitor")
        db.execute("DROP ROLE janitor")


def test_a_store_whose_pool_was_not_yet_open_works_in_a_forked_child(sessionstore_dsn: str) -> None:
    """``gunicorn --preload``: the app (and its store) is made before the fork."""
    pool = ConnectionPool(sessionstore_dsn, open=False, kwargs={"autocommit": True})
    store = Store(pool, cleanup=NoCleanup())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child opens the pool, uses the store, reports through the pipe
        try:
            with pool:
                token = new_token()
                store.commit(token, b"child", in_(60))
                message = f"found {store.find(token)!r}"
        except BaseException as exc:
            message = f"error: {exc!r}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    assert message == "found b'child'"


async def test_no_token_in_a_chained_error_or_its_log_lines(
    store: Both, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's DETAIL quotes rows: a duplicate key and a failed check name the token."""
    caplog.set_level(logging.DEBUG)
    token, payload = new_token(), b"secret-payload"
    db.execute("CREATE UNIQUE INDEX sessions_lower_token ON sessions (lower(token))")
    db.execute("ALTER TABLE sessions ADD CONSTRAINT small CHECK (length(data) < 100)")
    await store.commit(token.upper(), b"x", in_(60))
    failures = []
    for call in (
        lambda: store.commit(token.lower(), payload, in_(60)),  # duplicate key
        lambda: store.commit(new_token(), b"y" * 200, in_(60)),  # check violation
    ):
        with pytest.raises(DatabaseError) as info:
            await call()
        failures.append(info.value)
    assert failures[0].sqlstate == "23505"
    assert failures[1].sqlstate == "23514"
    for failure in failures:
        shown = [str(failure), repr(failure), str(failure.__cause__), repr(failure.__cause__)]
        shown.append("".join(traceback.format_exception(failure)))
        logging.getLogger("sessionstore.test").exception("failed", exc_info=failure)
        shown.extend(record.getMessage() for record in caplog.records)
        shown.extend(caplog.text.splitlines())
        for text in shown:
            for secret in (token, token.lower(), token.upper(), payload.decode()):
                assert secret not in text
