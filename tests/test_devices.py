"""Sessions people can see and control, in the session manager: the device listing,
revoking by listed id, re-authentication and timed rotation, on both stores.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import pytest
from _support import Both, table_rows
from test_manager import drive, manager

from sessionstore._core import hash_token
from sessionstore.manager import Device, Loaded, Outcome, SessionManager

OWNER = "alice"
LAPTOP = Device("192.0.2.10", "Firefox on a laptop")
PHONE = Device("2001:db8::7", "Safari on a phone")


class Clock:
    """The manager's clock, which a test moves forward."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


async def log_in(store: Both, sessions: SessionManager, device: Device | None = None) -> str:
    """A request that signs `OWNER` in on a new session; its token."""
    loaded = await drive(sessions.load(None), store)
    data: dict[str, Any] = {"cart": []}
    sessions.log_in(data, OWNER)
    outcome: Outcome = await drive(sessions.save(loaded, data, renew=True, device=device), store)
    assert outcome.token is not None
    return outcome.token


async def request(
    store: Both, sessions: SessionManager, token: str, **changes: Any
) -> tuple[Loaded, Outcome]:
    loaded: Loaded = await drive(sessions.load(token), store)
    outcome = await drive(sessions.save(loaded, {**loaded.data, **changes}), store)
    return loaded, outcome


async def test_the_listing_names_devices_and_never_a_token(
    open_store: Any, db: psycopg.Connection[Any]
) -> None:
    for hashed in (False, True):
        store: Both = open_store(owners=True, hash_tokens=hashed)
        await store.create_table()
        sessions = manager(record_devices=True)
        before = dt.datetime.now(dt.UTC)
        laptop = await log_in(store, sessions, LAPTOP)
        phone = await log_in(store, sessions, PHONE)
        listed = await drive(sessions.sessions(OWNER, laptop), store)
        assert [each.current for each in listed] == [True, False]  # soonest to expire first
        by_device = {each.user_agent: each for each in listed}
        assert by_device[LAPTOP.user_agent].ip == LAPTOP.ip
        assert by_device[PHONE.user_agent].ip == PHONE.ip
        stored = {key for key, _, _ in table_rows(db)}
        for each in listed:
            assert each.created is not None
            assert each.signed_in is not None
            assert before - dt.timedelta(seconds=1) <= each.created <= dt.datetime.now(dt.UTC)
            assert abs(each.signed_in - each.created) < dt.timedelta(seconds=5)
            # The expiry is the last renewal plus the idle timeout.
            assert abs(each.last_seen - each.created) < dt.timedelta(seconds=5)
            text = repr(each) + each.id + json.dumps(each.data)
            for secret in (laptop, phone, hash_token(laptop), hash_token(phone), *stored):
                assert secret not in text
            assert len(each.id) == 22  # 128 bits: no token's shape (43 characters)
        await store.clear()


async def test_devices_are_not_recorded_unless_asked(owned: Both) -> None:
    sessions = manager()
    token = await log_in(owned, sessions, LAPTOP)
    [listed] = await drive(sessions.sessions(OWNER, token), owned)
    assert (listed.ip, listed.user_agent) == (None, None)
    assert listed.current


async def test_revoke_ends_one_listed_session_of_the_owner_only(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    sessions = manager()
    laptop = await log_in(owned, sessions)
    phone = await log_in(owned, sessions)
    listed = await drive(sessions.sessions(OWNER, laptop), owned)
    [other] = [each for each in listed if not each.current]
    assert await drive(SessionManager.revoke("mallory", other.id), owned) is False
    assert await drive(SessionManager.revoke(OWNER, "A" * 22), owned) is False
    assert await drive(SessionManager.revoke(OWNER, phone), owned) is False  # a token is no id
    assert len(table_rows(db)) == 2
    assert await drive(SessionManager.revoke(OWNER, other.id), owned) is True
    assert [key for key, _, _ in table_rows(db)] == [laptop]
    with pytest.raises(TypeError, match="listed session id"):
        await drive(SessionManager.revoke(OWNER, b"id"), owned)  # type: ignore[arg-type]


async def test_signed_in_within_asks_when_the_user_last_signed_in(owned: Both) -> None:
    clock = Clock()
    sessions = manager(clock=clock)
    token = await log_in(owned, sessions)
    loaded: Loaded = await drive(sessions.load(token), owned)
    assert sessions.signed_in_within(loaded.data, dt.timedelta(minutes=5))
    clock.offset = dt.timedelta(minutes=6)
    assert not sessions.signed_in_within(loaded.data, 300)
    assert not sessions.signed_in_within({"cart": []}, 300)  # never signed in
    with pytest.raises(ValueError, match="within must be positive"):
        sessions.signed_in_within(loaded.data, 0)


async def test_a_rotation_moves_an_active_session_to_a_new_token(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    clock = Clock()
    grace = dt.timedelta(seconds=30)
    sessions = manager(clock=clock, rotate_every=900, rotate_grace=grace)
    old = await log_in(owned, sessions)
    _, outcome = await request(owned, sessions, old, seen=1)
    assert outcome.token == old  # not due yet

    clock.offset = dt.timedelta(seconds=901)
    in_flight: Loaded = await drive(sessions.load(old), owned)
    _, outcome = await request(owned, sessions, old, seen=2)
    new = outcome.token
    assert new is not None
    assert new != old
    assert outcome.set_cookie
    rows = {key: (json.loads(data), expiry) for key, data, expiry in table_rows(db)}
    assert rows[new][0]["seen"] == 2
    assert "_session_moved" not in rows[new][0]
    assert rows[old][1] <= dt.datetime.now(dt.UTC) + grace  # the grace only
    assert rows[new][1] > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=59)

    # The old token's requests in flight are served but write nothing, and never
    # give it back its idle timeout.
    late = await drive(sessions.save(in_flight, {**in_flight.data, "late": 1}), owned)
    assert not late.set_cookie
    assert not late.delete_cookie
    during: Loaded = await drive(sessions.load(old), owned)
    assert during.found
    assert during.data["seen"] == 2
    assert not (await drive(sessions.save(during, {**during.data, "x": 1}), owned)).set_cookie
    after = {key: (json.loads(data), expiry) for key, data, expiry in table_rows(db)}
    assert after[old][1] == rows[old][1]
    assert "late" not in after[new][0]
    assert "x" not in after[new][0]

    listed = await drive(sessions.sessions(OWNER, new), owned)
    assert [each.current for each in listed] == [True]  # the old token is not a device


async def test_overlapping_requests_due_for_rotation_make_one_new_token(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    clock = Clock()
    sessions = manager(clock=clock, rotate_every=900)
    old = await log_in(owned, sessions)
    clock.offset = dt.timedelta(seconds=901)
    first: Loaded = await drive(sessions.load(old), owned)
    second: Loaded = await drive(sessions.load(old), owned)
    one = await drive(sessions.save(first, {**first.data, "a": 1}), owned)
    other = await drive(sessions.save(second, {**second.data, "b": 2}), owned)
    assert one.token != old
    assert not other.set_cookie  # the browser keeps the new cookie the first one set
    tokens = [key for key, _, _ in table_rows(db)]
    assert sorted(tokens) == sorted([old, one.token])


async def test_a_renewal_due_with_rotation_on_writes_only_if_unchanged(
    owned: Both, db: psycopg.Connection[Any]
) -> None:
    clock = Clock()
    sessions = manager(clock=clock, rotate_every=3000, renew_after=0.1)
    token = await log_in(owned, sessions)
    clock.offset = dt.timedelta(seconds=400)
    _, outcome = await request(owned, sessions, token)
    assert outcome.set_cookie
    [(_, _, expiry)] = table_rows(db)
    assert expiry > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3900)


def test_rotation_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="rotate_grace must be shorter than idle_timeout"):
        manager(idle_timeout=60, rotate_every=600, rotate_grace=60)
    with pytest.raises(ValueError, match="rotate_every must be positive"):
        manager(rotate_every=0)
    with pytest.raises(TypeError, match="rotate_grace must be a timedelta"):
        manager(rotate_every=600, rotate_grace="30")
    assert manager(idle_timeout=2).rotate_every is None  # the grace matters only with rotation
