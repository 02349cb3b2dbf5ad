"""What the session manager guarantees, checked over real HTTP in every framework.

Each integration's test file serves a small app with the contract's routes, written
in its framework (the session is loaded before the gate, changed after it; see
`_gates`), and runs these checks against it:

- ``GET /c/set?key=K&value=V[&group=G&n=N][&hold=H]``: read the session, wait at
  the gate (until N requests of group G have read it; until hold H is released),
  then set ``session[K] = V`` (the string); answers ``ok``.
- ``GET /c/get``: the session's data, keys starting with ``_`` left out, as JSON;
  changes nothing.
- ``GET /c/logout``: clear the session.
- ``GET /c/arrived?group=G``: how many requests reached gate G.
- ``GET /c/release?hold=H``: release the requests held at H.

The per-user checks (`check_devices_are_listed_and_revoked` and the next three) serve
the app on a store with ``owners=True`` and ``max_sessions_per_owner=CAP``, its
integration set to record devices and to rotate tokens every `ROTATE_EVERY` seconds
with a grace of `ROTATE_GRACE` seconds, and these routes on top:

- ``GET /c/login?user=U``: the integration's login helper signs U in; ``ok``.
- ``GET /c/sessions``: the integration's listing of the user's sessions, as JSON: a
  list of objects with ``id``, ``current``, ``created``, ``last_seen``, ``expiry``,
  ``signed_in`` (ISO 8601 or null), ``ip`` and ``user_agent``.
- ``GET /c/revoke?id=ID``: the integration's revoke; ``true`` or ``false``.
- ``GET /c/fresh?within=S``: whether the user signed in within S seconds;
  ``true`` or ``false``.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from _http import Client, Reply


@dataclass
class Served:
    """A served contract app: its URL and its session cookie's name."""

    base: str
    cookie: str

    def get(self, path: str, token: str | None = None, agent: str | None = None) -> Reply:
        """GET as a browser holding the session cookie `token` (or none)."""
        cookie = f"{self.cookie}={token}" if token else ""
        return Client(self.base).get(path, cookie=cookie, agent=agent)

    def start(self) -> str:
        """A new session with one key; its token."""
        reply = self.get("/c/set?key=start&value=1")
        assert reply.status == 200, reply.body
        token = cookie_value(reply, self.cookie)
        assert token
        return token

    def data(self, token: str) -> dict[str, Any]:
        reply = self.get("/c/get", token)
        assert reply.status == 200, reply.body
        data: dict[str, Any] = json.loads(reply.body)
        return data


def cookie_value(reply: Reply, name: str) -> str | None:
    """The value `reply` sets cookie `name` to ("" if it deletes it); None if untouched."""
    for header in reply.cookies:
        first = header.split(";", 1)[0]
        key, _, value = first.partition("=")
        if key.strip() == name:
            deleted = "max-age=0" in header.lower() or "expires=thu, 01 jan 1970" in header.lower()
            return "" if deleted else value.strip().strip('"')
    return None


def row_version(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every row's key, xmin and expiry: a write of any row changes it."""
    return db.execute("SELECT token, xmin::text, expiry FROM sessions ORDER BY token").fetchall()


def overlapping_sets(app: Served, token: str, count: int) -> list[Reply]:
    """`count` requests of one session that each set their own key, all loaded before any saves."""
    group = secrets.token_hex(8)
    paths = [f"/c/set?key=k{i}&value={i}&group={group}&n={count}" for i in range(count)]
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda path: app.get(path, token), paths))


def check_overlapping_requests_keep_every_key(app: Served, count: int) -> None:
    token = app.start()
    replies = overlapping_sets(app, token, count)
    assert [r.status for r in replies] == [200] * count, [r.body for r in replies]
    assert app.data(token) == {"start": "1", **{f"k{i}": str(i) for i in range(count)}}


def check_many_sessions_lose_no_key(app: Served, sessions: int = 32, per_session: int = 4) -> None:
    tokens = [app.start() for _ in range(sessions)]
    group = secrets.token_hex(8)
    total = sessions * per_session
    # Every request of every session reads before any of them writes.
    paths = [
        (token, f"/c/set?key=k{i}&value={i}&group={group}&n={total}")
        for token in tokens
        for i in range(per_session)
    ]
    with ThreadPoolExecutor(total) as pool:
        replies = list(pool.map(lambda p: app.get(p[1], p[0]), paths))
    assert [r.status for r in replies] == [200] * total, {r.body for r in replies}
    lost = [
        (token, key)
        for token in tokens
        for key in (f"k{i}" for i in range(per_session))
        if key not in app.data(token)
    ]
    assert lost == []


def check_a_logout_racing_a_slower_request_stays_logged_out(
    app: Served, db: psycopg.Connection[Any]
) -> None:
    token = app.start()
    group, hold = secrets.token_hex(8), secrets.token_hex(8)
    slow: list[Reply] = []
    thread = threading.Thread(
        target=lambda: slow.append(
            app.get(f"/c/set?key=late&value=1&group={group}&n=1&hold={hold}", token)
        )
    )
    thread.start()
    wait_for(lambda: app.get(f"/c/arrived?group={group}").body.strip() == "1")
    logout = app.get("/c/logout", token)
    assert logout.status == 200
    assert cookie_value(logout, app.cookie) == ""
    assert app.get(f"/c/release?hold={hold}").status == 200
    thread.join(30)
    [reply] = slow
    assert reply.status == 200, reply.body
    assert cookie_value(reply, app.cookie) == ""  # the slower response deletes the cookie
    live = db.execute("SELECT count(*) FROM sessions WHERE expiry > now()").fetchone()
    assert live == (0,)


def check_a_read_only_request_writes_nothing(app: Served, db: psycopg.Connection[Any]) -> None:
    token = app.start()
    before = row_version(db)
    for _ in range(3):
        reply = app.get("/c/get", token)
        assert reply.status == 200
        assert cookie_value(reply, app.cookie) is None  # no cookie re-sent either
    assert row_version(db) == before


def check_the_idle_timeout_ends_a_session(app: Served, idle: float) -> None:
    """The app's idle timeout is `idle` seconds."""
    token = app.start()
    assert app.data(token) != {}
    time.sleep(idle + 1)
    assert app.data(token) == {}


def check_the_lifetime_ends_a_busy_session(app: Served, idle: float, lifetime: float) -> None:
    """The app renews on every request, idles out after `idle` s and ends at `lifetime` s."""
    token = app.start()
    started = time.monotonic()
    while time.monotonic() - started < lifetime - idle / 2:
        assert app.data(token) != {}, "idled out while busy"
        time.sleep(idle / 3)
    time.sleep(max(0.0, lifetime - (time.monotonic() - started)) + 0.5)
    assert app.data(token) == {}


#: The per-user app's settings (see the module's docstring).
CAP = 2
ROTATE_EVERY = 2.0
ROTATE_GRACE = 1.5


def sessions_json(listed: Iterable[Any]) -> str:
    """The ``/c/sessions`` body for an integration's listing (`UserSession`s)."""

    def value(field: str, each: Any) -> Any:
        got = getattr(each, field)
        return got.isoformat() if isinstance(got, dt.datetime) else got

    fields = ("id", "current", "created", "last_seen", "expiry", "signed_in", "ip", "user_agent")
    return json.dumps([{field: value(field, each) for field in fields} for each in listed])


def logged_in(app: Served, user: str, agent: str) -> str:
    """A new session of `user` from a client with `agent`; its token."""
    token = app.start()
    reply = app.get(f"/c/login?user={user}", token, agent)
    assert reply.status == 200, reply.body
    fresh = cookie_value(reply, app.cookie)
    assert fresh
    assert fresh != token  # a login renews the token
    return fresh


def listing(app: Served, token: str) -> list[dict[str, Any]]:
    reply = app.get("/c/sessions", token)
    assert reply.status == 200, reply.body
    listed: list[dict[str, Any]] = json.loads(reply.body)
    return listed


def as_json(sessions: Iterable[Any]) -> list[dict[str, Any]]:
    """An integration's `UserSession` listing as ``/c/sessions`` answers it (json.dumps it)."""

    def iso(moment: dt.datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    return [
        {
            "id": each.id,
            "current": each.current,
            "created": iso(each.created),
            "last_seen": iso(each.last_seen),
            "expiry": iso(each.expiry),
            "signed_in": iso(each.signed_in),
            "ip": each.ip,
            "user_agent": each.user_agent,
        }
        for each in sessions
    ]


def check_devices_are_listed_and_revoked(app: Served) -> None:
    laptop = logged_in(app, "ann", "Laptop/1.0")
    phone = logged_in(app, "ann", "Phone/2.0")
    other = logged_in(app, "bob", "Laptop/1.0")
    reply = app.get("/c/sessions", laptop)
    for token in (laptop, phone, other):
        assert token not in reply.body  # the listing never holds a token
    listed = listing(app, laptop)
    assert sorted(each["user_agent"] for each in listed) == ["Laptop/1.0", "Phone/2.0"]
    assert {each["ip"] for each in listed} == {"127.0.0.1"}
    [mine] = [each for each in listed if each["current"]]
    [theirs] = [each for each in listed if not each["current"]]
    assert mine["user_agent"] == "Laptop/1.0"
    for each in listed:
        created, seen = dt.datetime.fromisoformat(each["created"]), each["last_seen"]
        assert abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(minutes=1)
        assert dt.datetime.fromisoformat(seen) >= created
        assert dt.datetime.fromisoformat(each["expiry"]) > dt.datetime.now(dt.UTC)
        assert each["signed_in"] is not None
    # Bob can't end Ann's session; an id is no token and a token is no id.
    [bobs] = listing(app, other)
    assert app.get(f"/c/revoke?id={theirs['id']}", other).body.strip() == "false"
    assert app.get(f"/c/revoke?id={bobs['id']}", laptop).body.strip() == "false"
    assert app.get(f"/c/revoke?id={phone}", laptop).body.strip() == "false"
    assert app.data(phone) != {}
    assert app.get(f"/c/revoke?id={theirs['id']}", laptop).body.strip() == "true"
    assert app.data(phone) == {}
    assert [each["current"] for each in listing(app, laptop)] == [True]
    assert app.data(other) != {}


def check_the_cap_ends_the_oldest_sessions(app: Served) -> None:
    tokens = [logged_in(app, "cap", f"Device/{i}") for i in range(CAP + 2)]
    assert len(listing(app, tokens[-1])) == CAP
    assert [app.data(token) != {} for token in tokens] == [False] * 2 + [True] * CAP


def check_tokens_rotate_on_a_timer_with_a_grace(app: Served) -> None:
    old = logged_in(app, "rot", "Laptop/1.0")
    assert cookie_value(app.get("/c/set?key=a&value=1", old), app.cookie) in (None, old)
    time.sleep(ROTATE_EVERY + 0.2)
    reply = app.get("/c/set?key=b&value=2", old)
    assert reply.status == 200, reply.body
    new = cookie_value(reply, app.cookie)
    assert new
    assert new != old
    # A request in flight with the old cookie still works during the grace.
    assert app.data(old) == {"start": "1", "a": "1", "b": "2"}
    assert app.data(new) == {"start": "1", "a": "1", "b": "2"}
    assert len(listing(app, new)) == 1
    time.sleep(ROTATE_GRACE + 0.5)
    assert app.data(old) == {}
    assert app.data(new) == {"start": "1", "a": "1", "b": "2"}


def check_re_authentication_asks_when_the_user_signed_in(app: Served) -> None:
    token = app.start()
    assert app.get("/c/fresh?within=60", token).body.strip() == "false"
    token = logged_in(app, "fresh", "Laptop/1.0")
    assert app.get("/c/fresh?within=60", token).body.strip() == "true"
    time.sleep(1.2)
    assert app.get("/c/fresh?within=1", token).body.strip() == "false"
    assert app.get("/c/fresh?within=60", token).body.strip() == "true"


def check_devices_are_not_recorded_by_default(app: Served, db: psycopg.Connection[Any]) -> None:
    """The app is served on a store with ``owners=True``, its integration's defaults."""
    token = logged_in(app, "ann", "Laptop/1.0")
    [listed] = listing(app, token)
    assert (listed["ip"], listed["user_agent"]) == (None, None)
    [(data,)] = db.execute("SELECT data FROM sessions").fetchall()
    assert b"Laptop/1.0" not in bytes(data)
    assert b"127.0.0.1" not in bytes(data)


#: The per-user checks, each run on the per-user app (see the module's docstring), as
#: pytest parameters named for the check: ``parametrize("check", PER_USER_CHECKS)``.
PER_USER_CHECKS = [
    pytest.param(check, id=check.__name__.removeprefix("check_"))
    for check in (
        check_devices_are_listed_and_revoked,
        check_the_cap_ends_the_oldest_sessions,
        check_tokens_rotate_on_a_timer_with_a_grace,
        check_re_authentication_asks_when_the_user_signed_in,
    )
]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
