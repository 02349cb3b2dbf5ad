"""The cap on an owner's sessions (``max_sessions_per_owner``) and token rotation (`rotate`).

Every body runs on both stores, against the real database; the owner column is added
to the suite's plain SCS table the way a user would (`create_table()` with owners).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from _support import Both, db_now, in_, least_privileged_store, new_token, table_rows
from psycopg import sql

from sessionstore import AsyncStore
from sessionstore._core import FRESH_TOKEN_ATTEMPTS, Result, SessionCore, hash_token
from sessionstore.cli import main
from sessionstore.manager import is_token

GRACE = dt.timedelta(seconds=60)


async def capped(open_store: Any, cap: int, **options: Any) -> Both:
    """A store with owners and the cap, on a table with the owner column."""
    store: Both = open_store(owners=True, max_sessions_per_owner=cap, **options)
    await store.create_table()
    return store


def live_keys(db: psycopg.Connection[Any], owner: str, table: str = "sessions") -> set[str]:
    query = "SELECT token FROM {} WHERE owner = %s AND current_timestamp < expiry"
    rows = db.execute(sql.SQL(query).format(sql.Identifier(table)), (owner,)).fetchall()
    return {key for (key,) in rows}


def column(db: psycopg.Connection[Any], name: str, key: str, table: str = "sessions") -> Any:
    """The `name` column of the row stored under `key`."""
    query = sql.SQL("SELECT {} FROM {} WHERE token = %s").format(
        sql.Identifier(name), sql.Identifier(table)
    )
    row = db.execute(query, (key,)).fetchone()
    assert row is not None
    return row[0]


def owner_of(db: psycopg.Connection[Any], key: str) -> str | None:
    owner: str | None = column(db, "owner", key)
    return owner


def stored_expiry(db: psycopg.Connection[Any], key: str) -> dt.datetime:
    expiry: dt.datetime = column(db, "expiry", key)
    return expiry


# The cap.


async def test_logins_beyond_the_cap_delete_the_soonest_to_expire(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    store = await capped(open_store, 3)
    tokens = [new_token() for _ in range(5)]
    for n, token in enumerate(tokens):
        await store.commit(token, b"%d" % n, in_(600 + n), owner="alice")
        assert token in live_keys(db, "alice")
        assert len(live_keys(db, "alice")) == min(n + 1, 3)
    assert live_keys(db, "alice") == set(tokens[2:])
    assert await store.find(tokens[0]) is None


async def test_the_session_just_written_stays_though_it_expires_soonest(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    store = await capped(open_store, 2)
    late, early, written = new_token(), new_token(), new_token()
    await store.commit(late, b"", in_(900), owner="alice")
    await store.commit(early, b"", in_(300), owner="alice")
    await store.commit(written, b"", in_(60), owner="alice")
    assert live_keys(db, "alice") == {late, written}


async def test_create_and_set_owner_trim_too_and_other_owners_are_untouched(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    store = await capped(open_store, 1)
    assert store.store.max_sessions_per_owner == 1
    bobs = [new_token(), new_token()]
    await store.commit(bobs[0], b"", in_(600), owner="bob")
    await store.create(bobs[1], b"", in_(600))
    first, second, anonymous = new_token(), new_token(), new_token()
    assert await store.create(first, b"", in_(600), owner="alice") is True
    assert await store.create(second, b"", in_(600), owner="alice") is True
    assert live_keys(db, "alice") == {second}
    await store.commit(anonymous, b"", in_(600))
    assert await store.set_owner(anonymous, "alice") is True
    assert live_keys(db, "alice") == {anonymous}
    assert live_keys(db, "bob") == {bobs[0]}
    assert await store.find(bobs[1]) == b""  # an anonymous session is no owner's


async def test_a_write_that_gives_no_owner_trims_nothing(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    store = await capped(open_store, 1)
    kept = new_token()
    await store.commit(kept, b"a", in_(600), owner="alice")
    db.execute("INSERT INTO sessions VALUES (%s, '', now() + interval '1 h', 'alice')", ("x",))
    await store.commit(kept, b"a", in_(600))  # no owner: keeps it, no trim
    await store.commit(new_token(), b"", in_(600))
    assert await store.update(kept, b"a", in_(600)) is True
    assert await store.set_owner(new_token(), "alice") is False  # no live session
    assert await store.create(kept, b"", in_(600), owner="alice") is False  # taken
    assert live_keys(db, "alice") == {kept, "x"}


async def test_the_cap_with_hashed_tokens(open_store: Any, db: psycopg.Connection[Any]) -> None:
    store = await capped(open_store, 2, hash_tokens=True)
    tokens = [new_token() for _ in range(4)]
    for n, token in enumerate(tokens):
        await store.commit(token, b"", in_(600 + n), owner="alice")
    assert live_keys(db, "alice") == {hash_token(token) for token in tokens[2:]}
    assert [await store.find(token) for token in tokens] == [None, None, b"", b""]


def replay(log: list[tuple[str, dt.datetime]], cap: int) -> set[str]:
    """The sessions the cap leaves after these logins, in this order (the rule, in Python)."""
    live: dict[str, dt.datetime] = {}
    for key, expiry in log:
        others = sorted(((e, k) for k, e in live.items() if k != key), reverse=True)
        live = {k: e for e, k in others[: cap - 1]} | {key: expiry}
    return set(live)


async def test_concurrent_logins_of_one_owner_leave_the_most_recent_within_the_cap(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    # A trigger logs every insert in the order the database made them: a login's
    # insert runs under the owner's lock, so that is the order the logins happened.
    # It also sleeps a little, as a slow disk would, so logins overlap: without the
    # lock, one's trim would miss another's insert and leave too many sessions.
    db.execute("CREATE TABLE audit (n bigserial PRIMARY KEY, token text, expiry timestamptz)")
    db.execute(
        "CREATE FUNCTION log_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO audit (token, expiry) VALUES (NEW.token, NEW.expiry); "
        "PERFORM pg_sleep(0.005); RETURN NULL; END $$"
    )
    db.execute(
        "CREATE TRIGGER audit AFTER INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION log_insert()"
    )
    store = await capped(open_store, 3)
    count = 32
    tokens = [new_token() for _ in range(count)]
    # Expiries in no relation to the order of arrival, so the trim's order shows.
    offsets = random.sample(range(count), count)
    expiries = [in_(600 + offset) for offset in offsets]

    def login(n: int) -> Any:
        # Half commit, half create: both give the new session its owner.
        write = store.store.commit if n % 2 else store.store.create
        return write(tokens[n], b"%d" % n, expiries[n], owner="alice")

    if store.is_async:
        await asyncio.gather(*(login(n) for n in range(count)))
    else:
        with ThreadPoolExecutor(count) as executor:
            list(executor.map(login, range(count)))
    log = [
        (key, expiry) for key, expiry in db.execute("SELECT token, expiry FROM audit ORDER BY n")
    ]
    assert len(log) == count
    survivors = live_keys(db, "alice")
    assert len(survivors) == 3
    assert log[-1][0] in survivors  # the last login stays
    assert survivors == replay(log, 3)


def test_a_bad_cap_is_refused_when_the_store_is_made(open_store: Any) -> None:
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"max_sessions_per_owner": 3}, ValueError),  # no owners
        ({"owners": True, "max_sessions_per_owner": 0}, ValueError),
        ({"owners": True, "max_sessions_per_owner": -1}, ValueError),
        ({"owners": True, "max_sessions_per_owner": "3"}, TypeError),
        ({"owners": True, "max_sessions_per_owner": True}, TypeError),
        ({"owners": True, "max_sessions_per_owner": 2.0}, TypeError),
    ]
    for options, error in cases:
        with pytest.raises(error, match="max_sessions_per_owner"):
            open_store(**options)


def test_the_cap_defaults_to_none(open_store: Any) -> None:
    assert open_store(owners=True).store.max_sessions_per_owner is None
    assert open_store().store.max_sessions_per_owner is None


# Rotation.


async def test_rotate_copies_the_session_to_a_new_token_and_cuts_the_old_one(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    store: Both = open_store(owners=True)
    await store.create_table()
    old, expiry = new_token(), in_(3600)
    await store.commit(old, b"data", expiry, owner="alice")
    before = db_now(db)
    new = await store.rotate(old, grace=GRACE)
    after = db_now(db)
    assert new is not None
    assert new != old
    assert is_token(new)
    assert await store.find(new) == b"data"
    assert await store.expiry(new) == expiry
    assert owner_of(db, new) == "alice"
    assert await store.find(old) == b"data"  # still live, for the grace
    assert before + GRACE <= stored_expiry(db, old) <= after + GRACE
    assert owner_of(db, old) == "alice"


async def test_the_old_token_dies_when_the_grace_ends(store: Both) -> None:
    old = new_token()
    await store.commit(old, b"data", in_(3600))
    new = await store.rotate(old, grace=dt.timedelta(milliseconds=300))
    assert new is not None
    deadline = time.monotonic() + 10
    while await store.find(old) is not None:
        assert time.monotonic() < deadline, "the old token outlived its grace"
        await asyncio.sleep(0.05)
    assert await store.find(new) == b"data"


async def test_a_grace_of_zero_ends_the_old_token_at_once(store: Both) -> None:
    old = new_token()
    await store.commit(old, b"data", in_(3600))
    new = await store.rotate(old, grace=dt.timedelta(0))
    assert new is not None
    assert await store.find(old) is None
    assert await store.find(new) == b"data"


async def test_rotate_returns_none_and_changes_nothing_without_a_session_to_rotate(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    expired, short = new_token(), new_token()
    await store.commit(expired, b"", in_(-1))
    await store.commit(short, b"", in_(30))  # no more than the grace left
    before = table_rows(db)
    assert await store.rotate(new_token(), grace=GRACE) is None
    assert await store.rotate(expired, grace=GRACE) is None
    assert await store.rotate(short, grace=GRACE) is None
    assert table_rows(db) == before


async def test_a_rotated_token_is_not_rotated_again(store: Both) -> None:
    old = new_token()
    await store.commit(old, b"", in_(3600))
    assert await store.rotate(old, grace=GRACE) is not None
    assert await store.rotate(old, grace=GRACE) is None


async def test_concurrent_rotations_of_one_token_make_one_successor(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    await rotate_at_once(store, db)


async def rotate_at_once(store: Both, db: psycopg.Connection[Any], table: str = "sessions") -> None:
    """16 concurrent rotations of one session make one successor, and no other row."""
    old = new_token()
    await store.commit(old, b"data", in_(3600))
    count = 16
    if isinstance(store.store, AsyncStore):
        results = await asyncio.gather(
            *(store.store.rotate(old, grace=GRACE) for _ in range(count))
        )
    else:
        sync_store = store.store
        with ThreadPoolExecutor(count) as executor:
            results = list(
                executor.map(lambda _: sync_store.rotate(old, grace=GRACE), range(count))
            )
    winners = [new for new in results if new is not None]
    assert len(winners) == 1
    assert {row[0] for row in table_rows(db, table)} == {old, winners[0]}
    assert await store.find(winners[0]) == b"data"


async def test_rotate_with_hashed_tokens(open_store: Any, db: psycopg.Connection[Any]) -> None:
    store: Both = open_store(hash_tokens=True)
    old = new_token()
    await store.commit(old, b"data", in_(3600))
    new = await store.rotate(old, grace=dt.timedelta(0))
    assert new is not None
    assert {row[0] for row in table_rows(db)} == {hash_token(old), hash_token(new)}
    assert await store.find(new) == b"data"
    assert await store.find(old) is None


async def test_rotate_with_a_prefix_keeps_the_new_token_under_it(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    """Litestar's namespaced keys: the new token is the prefix and a fresh token."""
    for hashed in (False, True):
        store: Both = open_store(hash_tokens=hashed)
        old = "ns:" + new_token()
        await store.commit(old, b"data", in_(3600))
        new = await store.rotate(old, grace=GRACE, prefix="ns:")
        assert new is not None
        assert new.startswith("ns:")
        assert is_token(new.removeprefix("ns:"))
        assert await store.find(new) == b"data"
        before = table_rows(db)
        with pytest.raises(TypeError, match="prefix must be a str"):
            await store.rotate(new, grace=GRACE, prefix=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="token"):
            await store.rotate(new, grace=GRACE, prefix="a\x00b")
        assert table_rows(db) == before
        await store.clear()


@pytest.mark.parametrize(
    ("token", "grace", "error", "match"),
    [
        (42, GRACE, TypeError, "token"),
        ("", GRACE, ValueError, "token"),
        ("a\x00b", GRACE, ValueError, "token"),
        ("TOKEN", 60, TypeError, "grace"),
        ("TOKEN", None, TypeError, "grace"),
        ("TOKEN", dt.timedelta(seconds=-1), ValueError, "grace"),
        ("TOKEN", dt.timedelta.max, ValueError, "grace"),
    ],
    ids=["int-token", "empty-token", "nul-token", "int-grace", "no-grace", "negative", "huge"],
)
async def test_bad_rotate_input_is_refused_before_sql(
    store: Both,
    db: psycopg.Connection[Any],
    token: Any,
    grace: Any,
    error: type[Exception],
    match: str,
) -> None:
    live = new_token()
    await store.commit(live, b"", in_(3600))
    before = table_rows(db)
    with pytest.raises(error, match=match):
        await store.rotate(live if token == "TOKEN" else token, grace=grace)
    assert table_rows(db) == before


# Both, as the application's least-privileged role.


def test_the_least_privilege_role_runs_the_cap_and_rotate(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    assert main(["migrate", "--owners", "--dsn", sessionstore_dsn]) == 0  # as the owner
    options = {"owners": True, "max_sessions_per_owner": 1}
    with least_privileged_store(sessionstore_dsn, db, "web_capped", **options) as store:
        a, b, c = new_token(), new_token(), new_token()
        store.commit(a, b"a", in_(600), owner="alice")
        assert store.create(b, b"b", in_(600), owner="alice") is True
        assert live_keys(db, "alice") == {b}
        store.commit(c, b"c", in_(600))
        assert store.set_owner(c, "alice") is True
        assert live_keys(db, "alice") == {c}
        new = store.rotate(c, grace=dt.timedelta(0))
        assert new is not None
        assert live_keys(db, "alice") == {new}


def test_a_rotation_whose_new_token_is_taken_tries_another() -> None:
    # The sans-IO steps, answered as the database would: a live row holds the first
    # new key (the old row was found, nothing was inserted), the second is free.
    core = SessionCore(hash_tokens=True)
    steps = core.rotate_steps("old", GRACE)
    first = next(steps)
    assert first.params[0] == hash_token("old")
    second = steps.send(Result([(True, False)], 1))
    assert second.params[2] != first.params[2]
    with pytest.raises(StopIteration) as done:
        steps.send(Result([(True, True)], 1))
    token = done.value.value
    assert is_token(token)
    assert second.params[2] == hash_token(token)
    # A missing old row ends it at once; a taken key every time is a broken RNG.
    missing = core.rotate_steps("old", GRACE)
    next(missing)
    with pytest.raises(StopIteration) as done:
        missing.send(Result([(False, False)], 1))
    assert done.value.value is None
    taken = core.rotate_steps("old", GRACE)
    next(taken)
    for _ in range(FRESH_TOKEN_ATTEMPTS - 1):
        taken.send(Result([(True, False)], 1))
    with pytest.raises(RuntimeError, match="no free session token"):
        taken.send(Result([(True, False)], 1))
