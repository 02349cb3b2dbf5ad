"""The cap on an owner's sessions (``max_sessions_per_owner``).

Every body runs on both stores, against the real database; the owner column is added
to the suite's plain SCS table the way a user would (`create_table()` with owners).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from _support import Both, in_, least_privileged_store, new_token

from sessionstore._core import hash_token
from sessionstore.cli import main


async def capped(open_store: Any, cap: int, **options: Any) -> Both:
    """A store with owners and the cap, on a table with the owner column."""
    store: Both = open_store(owners=True, max_sessions_per_owner=cap, **options)
    await store.create_table()
    return store


def live_keys(db: psycopg.Connection[Any], owner: str) -> set[str]:
    rows = db.execute(
        "SELECT token FROM sessions WHERE owner = %s AND current_timestamp < expiry", (owner,)
    ).fetchall()
    return {key for (key,) in rows}


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
    for options, error in [
        ({"max_sessions_per_owner": 3}, ValueError),  # no owners
        ({"owners": True, "max_sessions_per_owner": 0}, ValueError),
        ({"owners": True, "max_sessions_per_owner": -1}, ValueError),
        ({"owners": True, "max_sessions_per_owner": "3"}, TypeError),
        ({"owners": True, "max_sessions_per_owner": True}, TypeError),
        ({"owners": True, "max_sessions_per_owner": 2.0}, TypeError),
    ]:
        with pytest.raises(error, match="max_sessions_per_owner"):
            open_store(**options)


def test_the_cap_defaults_to_none(open_store: Any) -> None:
    assert open_store(owners=True).store.max_sessions_per_owner is None
    assert open_store().store.max_sessions_per_owner is None


# As the application's least-privileged role.


def test_the_least_privilege_role_runs_the_cap(
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
