"""The session manager's decisions, run on both stores against real PostgreSQL.

Each test drives `SessionManager.load`/`save` as an integration does, with a JSON
codec, and checks what reached the table and what the cookie should do.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import pytest
from _support import Both, table_rows

from sessionstore import AsyncStore
from sessionstore.manager import (
    CREATED_KEY,
    Loaded,
    Outcome,
    SessionManager,
    Steps,
    arun,
    run,
    secure_by_default,
)


async def drive(steps: Steps[Any], store: Both) -> Any:
    if isinstance(store.store, AsyncStore):
        return await arun(steps, store.store)
    return run(steps, store.store)


def manager(**options: Any) -> SessionManager:
    options.setdefault("idle_timeout", 3600)
    return SessionManager(
        lambda data: json.dumps(data).encode(), lambda raw: json.loads(raw), **options
    )


def xmin(db: psycopg.Connection[Any], token: str) -> int:
    row = db.execute(
        "SELECT xmin::text::bigint FROM sessions WHERE token = %s", (token,)
    ).fetchone()
    assert row is not None
    return int(row[0])


async def new_session(store: Both, sessions: SessionManager, data: dict[str, Any]) -> str:
    loaded = await drive(sessions.load(None), store)
    outcome: Outcome = await drive(sessions.save(loaded, data), store)
    assert outcome.set_cookie
    assert outcome.token is not None
    return outcome.token


async def test_a_new_session_gets_a_fresh_token_and_its_creation_time(store: Both) -> None:
    sessions = manager()
    token = await new_session(store, sessions, {"a": 1})
    loaded: Loaded = await drive(sessions.load(token), store)
    assert loaded.found
    assert loaded.data["a"] == 1
    assert isinstance(loaded.data[CREATED_KEY], float)


async def test_an_unchanged_session_is_not_written_until_renewal_is_due(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    sessions = manager(renew_after=0.5)
    token = await new_session(store, sessions, {"a": 1})
    before = xmin(db, token)
    for _ in range(3):
        loaded = await drive(sessions.load(token), store)
        outcome = await drive(sessions.save(loaded, loaded.data), store)
        assert not outcome.cookie_changed
    assert xmin(db, token) == before


async def test_an_unchanged_session_is_renewed_when_due(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    sessions = manager(renew_after=0.0)  # due on every request
    token = await new_session(store, sessions, {"a": 1})
    before = xmin(db, token)
    loaded = await drive(sessions.load(token), store)
    outcome = await drive(sessions.save(loaded, loaded.data), store)
    assert outcome.set_cookie
    assert outcome.expiry > loaded.expiry
    assert xmin(db, token) != before
    assert [row[2] for row in table_rows(db)] == [outcome.expiry]


async def test_overlapping_requests_keep_each_others_keys(store: Both) -> None:
    sessions = manager()
    token = await new_session(store, sessions, {"kept": 0, "gone": 1})
    first = await drive(sessions.load(token), store)
    second = await drive(sessions.load(token), store)
    third = await drive(sessions.load(token), store)
    a = {**first.data, "a": 1}
    b = {**second.data, "b": 2}
    c = {k: v for k, v in third.data.items() if k != "gone"}
    for loaded, data in ((first, a), (second, b), (third, c)):
        outcome = await drive(sessions.save(loaded, data), store)
        assert outcome.set_cookie
        assert outcome.token == token
    final = await drive(sessions.load(token), store)
    assert {k: v for k, v in final.data.items() if k != CREATED_KEY} == {"kept": 0, "a": 1, "b": 2}


async def test_a_save_after_a_logout_writes_nothing_and_deletes_the_cookie(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    sessions = manager()
    token = await new_session(store, sessions, {"user": "alice"})
    slow = await drive(sessions.load(token), store)
    logout = await drive(sessions.load(token), store)
    assert (await drive(sessions.save(logout, {}), store)).delete_cookie
    outcome = await drive(sessions.save(slow, {**slow.data, "cart": [1]}), store)
    assert outcome == Outcome(delete_cookie=True)
    assert table_rows(db) == []


async def test_renewing_deletes_the_old_row_and_keeps_the_creation_time(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    sessions = manager()
    token = await new_session(store, sessions, {"a": 1})
    loaded = await drive(sessions.load(token), store)
    data = dict(loaded.data)
    SessionManager.log_in(data, "alice")
    outcome = await drive(sessions.save(loaded, data, renew=True), store)
    assert outcome.token not in (None, token)
    assert [row[0] for row in table_rows(db)] == [outcome.token]
    renewed = await drive(sessions.load(outcome.token), store)
    assert renewed.data[CREATED_KEY] == loaded.data[CREATED_KEY]
    assert renewed.data["_session_owner"] == "alice"


async def test_an_emptied_session_loses_its_row_and_cookie(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    sessions = manager()
    token = await new_session(store, sessions, {"a": 1})
    loaded = await drive(sessions.load(token), store)
    outcome = await drive(sessions.save(loaded, {CREATED_KEY: loaded.data[CREATED_KEY]}), store)
    assert outcome == Outcome(delete_cookie=True)
    assert table_rows(db) == []


async def test_the_lifetime_caps_every_expiry_and_ends_the_session(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    start = dt.datetime.now(dt.UTC)
    now = [start]
    sessions = manager(idle_timeout=60, lifetime=100, renew_after=0.0, clock=lambda: now[0])
    token = await new_session(store, sessions, {"a": 1})
    created = (await drive(sessions.load(token), store)).data[CREATED_KEY]
    end = dt.datetime.fromtimestamp(created, dt.UTC) + dt.timedelta(seconds=100)
    now[0] = start + dt.timedelta(seconds=70)  # renewal would reach 130 s: capped
    loaded = await drive(sessions.load(token), store)
    outcome = await drive(sessions.save(loaded, {**loaded.data, "b": 2}), store)
    assert outcome.expiry == end
    assert table_rows(db)[0][2] == end
    now[0] = end + dt.timedelta(seconds=1)
    loaded = await drive(sessions.load(token), store)
    assert not loaded.found
    assert table_rows(db) == []  # its row is deleted at once


async def test_the_idle_timeout_sets_the_expiry(store: Both, db: psycopg.Connection[Any]) -> None:
    sessions = manager(idle_timeout=dt.timedelta(minutes=5))
    before = dt.datetime.now(dt.UTC)
    token = await new_session(store, sessions, {"a": 1})
    [(_, _, expiry)] = table_rows(db)
    assert before + dt.timedelta(minutes=5) <= expiry + dt.timedelta(seconds=1)
    assert expiry <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert token


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="renew_after"):
        manager(renew_after=1.5)
    with pytest.raises(TypeError, match="idle_timeout"):
        manager(idle_timeout="1h")
    with pytest.raises(ValueError, match="lifetime"):
        manager(lifetime=0)


@pytest.mark.parametrize(
    ("host", "secure"),
    [
        ("localhost:8000", False),
        ("127.0.0.1", False),
        ("[::1]:8000", False),
        ("app.localhost", False),
        ("example.com", True),
        ("example.com:443", True),
        ("10.0.0.5:8000", True),
        (None, True),
    ],
)
def test_cookies_are_secure_by_default_except_in_local_development(
    host: str | None, secure: bool
) -> None:
    assert secure_by_default(host) is secure
