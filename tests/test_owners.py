"""Sessions per user (``owners=True``): the owner column, its migration, and its API.

Every body runs on both stores; the table is the suite's plain SCS table, migrated
the way a user would (`create_table()` / ``migrate --owners`` on a populated table).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from _support import Both, app_role, in_, new_token, table_rows
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import (
    MAX_OWNER_LENGTH,
    AsyncStore,
    DatabaseError,
    OwnedSession,
    OwnersNotEnabledError,
    Store,
)
from sessionstore._core import hash_token
from sessionstore.cleanup import NoCleanup
from sessionstore.cli import main


def owner_of(db: psycopg.Connection[Any], key: str) -> str | None:
    row = db.execute("SELECT owner FROM sessions WHERE token = %s", (key,)).fetchone()
    assert row is not None
    owner: str | None = row[0]
    return owner


@pytest.fixture(params=["sync", "async"])
async def open_store(request: pytest.FixtureRequest, sessionstore_dsn: str) -> AsyncIterator[Any]:
    """A factory of stores on the test's database: ``open_store(**options)``."""
    kwargs = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs) as pool:
            yield lambda **options: Both(Store(pool, cleanup=NoCleanup(), **options))
    else:
        async with AsyncConnectionPool(
            sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs
        ) as apool:
            yield lambda **options: Both(AsyncStore(apool, cleanup=NoCleanup(), **options))


@pytest.fixture
async def owned(open_store: Any) -> Both:
    store: Both = open_store(owners=True)
    assert await store.create_table() is True  # adds the column and its index
    return store


def test_migrate_owners_on_a_populated_scs_table_keeps_everything(
    sessionstore_dsn: str, db: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db.execute(
        "INSERT INTO sessions SELECT 'go-' || i, '\\x0102', now() + interval '1 hour' "
        "FROM generate_series(1, 2000) AS i"
    )
    before = table_rows(db)
    assert main(["migrate", "--owners", "--dsn", sessionstore_dsn]) == 0
    assert capsys.readouterr().out == 'created: "sessions"\n'
    assert table_rows(db) == before  # not rewritten: every row as it was
    assert db.execute("SELECT count(*) FROM sessions WHERE owner IS NULL").fetchone() == (2000,)
    index = db.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'sessions_owner_idx'::regclass"
    ).fetchone()
    assert index == (True,)
    # A Go SCS app sharing the table: its insert and upsert name no owner, and work.
    db.execute("INSERT INTO sessions (token, data, expiry) VALUES ('go-new', '', now() + '1h')")
    db.execute(
        "INSERT INTO sessions (token, data, expiry) VALUES ('go-1', 'x', now() + '1h') "
        "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry"
    )
    assert main(["migrate", "--owners", "--dsn", sessionstore_dsn]) == 0
    assert capsys.readouterr().out == 'already up to date: "sessions"\n'


def test_schema_owners_prints_the_column_and_its_index(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "--owners"]) == 0
    out = capsys.readouterr().out
    assert "\texpiry TIMESTAMPTZ NOT NULL,\n\towner TEXT\n);" in out
    assert "CREATE INDEX sessions_owner_idx ON sessions (owner) WHERE owner IS NOT NULL;" in out


async def test_commit_and_create_store_the_owner_and_none_keeps_it(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    a, b = new_token(), new_token()
    await owned.commit(a, b"1", in_(60), owner="alice")
    assert owner_of(db, a) == "alice"
    await owned.commit(a, b"2", in_(60))  # a plain save keeps the owner
    assert owner_of(db, a) == "alice"
    await owned.commit(a, b"3", in_(60), owner="bob")
    assert owner_of(db, a) == "bob"
    assert await owned.create(b, b"new", in_(60), owner="carol") is True
    assert owner_of(db, b) == "carol"
    assert await owned.create(b, b"again", in_(60), owner="mallory") is False
    assert owner_of(db, b) == "carol"


async def test_set_owner_sets_and_clears_on_live_sessions_only(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    live, old = new_token(), new_token()
    await owned.commit(live, b"x", in_(60))
    await owned.commit(old, b"x", in_(-60))
    assert await owned.set_owner(live, "alice") is True
    assert owner_of(db, live) == "alice"
    assert await owned.set_owner(live, None) is True
    assert owner_of(db, live) is None
    assert await owned.set_owner(old, "alice") is False
    assert owner_of(db, old) is None
    assert await owned.set_owner(new_token(), "alice") is False


@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed"])
async def test_sessions_of_lists_live_sessions_and_revoke_takes_their_keys(
    open_store: Any, hashed: bool
) -> None:
    store: Both = open_store(owners=True, hash_tokens=hashed)
    await store.create_table()
    soon, later, gone, other = new_token(), new_token(), new_token(), new_token()
    await store.commit(later, b"later", in_(7200), owner="alice")
    await store.commit(soon, b"soon", in_(60), owner="alice")
    await store.commit(gone, b"gone", in_(-60), owner="alice")
    await store.commit(other, b"other", in_(60), owner="bob")
    listed = await store.sessions_of("alice")
    key = hash_token if hashed else (lambda token: token)
    assert [(s.key, s.data) for s in listed] == [(key(soon), b"soon"), (key(later), b"later")]
    assert all(isinstance(s, OwnedSession) and s.expiry.tzinfo is not None for s in listed)
    # A key from alice's list can't end bob's session, and bob's key not alice's.
    assert await store.revoke("bob", listed[0].key) is False
    assert await store.revoke("alice", key(other)) is False
    assert await store.revoke("alice", listed[0].key) is True
    assert await store.find(soon) is None
    assert await store.find(later) == b"later"
    assert await store.find(other) == b"other"


async def test_delete_owned_logs_out_everywhere_but_the_kept_session(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    mine = [new_token() for _ in range(4)]
    for token in mine:
        await owned.commit(token, b"x", in_(60), owner="alice")
    theirs = new_token()
    await owned.commit(theirs, b"x", in_(60), owner="bob")
    anonymous = new_token()
    await owned.commit(anonymous, b"x", in_(60))
    assert await owned.delete_owned("alice", keep=mine[0]) == 3
    assert [s.key for s in await owned.sessions_of("alice")] == [mine[0]]
    assert await owned.delete_owned("alice") == 1
    assert await owned.sessions_of("alice") == []
    assert {row[0] for row in table_rows(db)} == {theirs, anonymous}


async def test_without_owners_the_per_owner_calls_fail_clearly_and_write_nothing(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    store: Both = open_store()
    token = new_token()
    await store.commit(token, b"x", in_(60))
    before = table_rows(db)
    calls = [
        lambda: store.commit(token, b"y", in_(60), owner="alice"),
        lambda: store.create(new_token(), b"y", in_(60), owner="alice"),
        lambda: store.set_owner(token, "alice"),
        lambda: store.sessions_of("alice"),
        lambda: store.delete_owned("alice"),
        lambda: store.revoke("alice", token),
    ]
    for call in calls:
        with pytest.raises(OwnersNotEnabledError, match="owners=True"):
            await call()
    assert table_rows(db) == before


async def test_owners_on_a_table_without_the_column_says_to_migrate(open_store: Any) -> None:
    store: Both = open_store(owners=True)
    with pytest.raises(DatabaseError, match="migrate --owners") as info:
        await store.commit(new_token(), b"x", in_(60), owner="alice")
    assert info.value.sqlstate == "42703"
    with pytest.raises(DatabaseError, match="migrate --owners"):
        await store.sessions_of("alice")


@pytest.mark.parametrize(
    ("owner", "error"),
    [
        ("", ValueError),
        ("a\x00b", ValueError),
        ("a\ud800", ValueError),
        ("x" * (MAX_OWNER_LENGTH + 1), ValueError),
        (42, TypeError),
        (b"alice", TypeError),
    ],
    ids=["empty", "nul", "surrogate", "too-long", "int", "bytes"],
)
async def test_bad_owner_is_refused_before_sql(
    owned: Both, db: psycopg.Connection[Any], owner: Any, error: type[Exception]
) -> None:
    # `owner` is deliberately of the wrong type or value: Any lets it through mypy.
    token = new_token()
    await owned.commit(token, b"x", in_(60), owner="alice")
    before = table_rows(db)
    for call in (
        lambda: owned.commit(token, b"y", in_(60), owner=owner),
        lambda: owned.create(new_token(), b"y", in_(60), owner=owner),
        lambda: owned.set_owner(token, owner),
        lambda: owned.sessions_of(owner),
        lambda: owned.delete_owned(owner),
        lambda: owned.revoke(owner, token),
    ):
        with pytest.raises(error, match="owner"):
            await call()
    assert table_rows(db) == before
    assert owner_of(db, token) == "alice"


async def test_concurrent_commits_with_owners_are_combined(owned: Both) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    tokens = [new_token() for _ in range(60)]

    def commit(n: int) -> Any:
        return owned.store.commit(tokens[n], b"%d" % n, in_(60), owner=f"user{n % 3}")

    if owned.is_async:
        await asyncio.gather(*(commit(n) for n in range(60)))
    else:
        with ThreadPoolExecutor(16) as executor:
            list(executor.map(commit, range(60)))
    for n in range(3):
        listed = {s.key for s in await owned.sessions_of(f"user{n}")}
        assert listed == {tokens[i] for i in range(60) if i % 3 == n}


def test_the_least_privilege_role_runs_the_per_owner_calls(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    assert main(["migrate", "--owners", "--dsn", sessionstore_dsn]) == 0  # as the owner
    with (
        app_role(db, sessionstore_dsn, "web_owners") as dsn,
        ConnectionPool(dsn, min_size=1, kwargs={"autocommit": True}) as pool,
    ):
        store = Store(pool, cleanup=NoCleanup(), owners=True)
        assert store.create_table() is False  # everything is there: no DDL needed
        a, b = new_token(), new_token()
        store.commit(a, b"x", in_(60), owner="alice")
        assert store.create(b, b"y", in_(60), owner="alice") is True
        assert store.set_owner(b, "alice") is True
        assert {s.key for s in store.sessions_of("alice")} == {a, b}
        assert store.revoke("alice", b) is True
        assert store.delete_owned("alice", keep=None) == 1


@pytest.mark.parametrize("hashed", [False, True])
async def test_update_versioned_sets_the_owner_or_keeps_it(
    open_store: Any, db: psycopg.Connection[Any], hashed: bool
) -> None:
    store: Both = open_store(owners=True, hash_tokens=hashed)
    await store.create_table()
    token = new_token()
    await store.commit(token, b"a", in_(60), owner="alice")
    found = await store.find_versioned(token)
    assert found is not None
    assert await store.update_versioned(token, b"b", in_(60), found.version) is True
    [(key, _)] = [(k, v) for k, v in (await store.all()).items()]
    assert owner_of(db, key) == "alice"  # None keeps the row's owner
    found = await store.find_versioned(token)
    assert found is not None
    assert await store.update_versioned(token, b"c", in_(60), found.version, owner="bob")
    assert owner_of(db, key) == "bob"
    assert await store.find(token) == b"c"
