"""The Django integration: the session engine in process, and the example app over HTTP.

In process, Django is configured once for the test process (a session fixture; each
pytest-xdist worker is its own process), and each test points ``SESSIONSTORE`` at its
own database with ``override_settings``. The example app, `sessionstore.examples.
django_app` (the one the demo serves), runs in subprocesses: under gunicorn (``--preload``,
two workers: the sync views on `Store`) and under uvicorn (the async views on
`AsyncStore`), each on a socket the test bound and handed over, driven with urllib and
a cookie jar; every test kills its server's whole process group and checks that none
of it survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _session_contract as contract
import django
import psycopg
import pytest
from _http import Client, Reply, issued_token, listed
from _support import new_token, table_rows, wait_until
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_logged_in
from django.contrib.sessions.backends.base import UpdateError
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from sessionstore import DatabaseError, OwnersNotEnabledError
from sessionstore._core import hash_token
from sessionstore._from_dsn import create_table
from sessionstore.integrations import django as engine
from sessionstore.integrations.django import SessionStore
from sessionstore.manager import CREATED_KEY, DEVICE_KEY, SIGNED_IN_KEY, session_id

MESSAGE = "Hello from a session!"
USER = "alice"  # whom the example's /login logs in
COOKIE = "sessionid"  # Django's SESSION_COOKIE_NAME
KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # the session manager's tokens
STOP_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def django_configured() -> None:
    """Django's settings for the in-process tests: once per test process."""
    if not settings.configured:
        settings.configure(
            SECRET_KEY="test-secret-key",
            SESSION_ENGINE="sessionstore.integrations.django",
            # auth for its User model (built in memory only: no ORM database here).
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
            ],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()


@pytest.fixture
def configured(
    django_configured: None, sessionstore_dsn: str
) -> Iterator[Callable[..., contextlib.AbstractContextManager[None]]]:
    """``SESSIONSTORE`` on the test's database (owners on, the column added)."""
    create_table(sessionstore_dsn, owners=True)

    @contextlib.contextmanager
    def using(**options: Any) -> Iterator[None]:
        with override_settings(
            SESSIONSTORE={"dsn": sessionstore_dsn, "owners": True, "max_size": 4, **options}
        ):
            yield

    yield using
    engine.close()


@pytest.fixture
async def sessions(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
) -> AsyncIterator[None]:
    """The default ``SESSIONSTORE`` for one test; the loop's pool closed afterwards."""
    with configured():
        yield
        await engine.aclose()


@dataclass
class Mode:
    """One test body for the sync methods and the async ones (``aload``, ``asave``...)."""

    is_async: bool

    async def __call__(self, session: SessionStore, name: str, *args: Any) -> Any:
        if self.is_async:
            return await getattr(session, f"a{name}")(*args)
        return getattr(session, name)(*args)

    async def saved(self, **data: Any) -> SessionStore:
        """A new session holding `data`, saved (under a new key)."""
        session = SessionStore()
        session.update(data)
        await self(session, "save")
        return session

    async def clear_expired(self) -> None:
        if self.is_async:
            await SessionStore.aclear_expired()
        else:
            SessionStore.clear_expired()


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return Mode(request.param == "async")


def rows(db: psycopg.Connection[Any]) -> dict[str, tuple[bytes, dt.datetime]]:
    return {token: (bytes(data), expiry) for token, data, expiry in table_rows(db)}


def owners(db: psycopg.Connection[Any]) -> dict[str, str | None]:
    return dict(db.execute("SELECT token, owner FROM sessions").fetchall())


def encoded(data: dict[str, Any]) -> bytes:
    return SessionStore().encode(data).encode()


def in_(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


class _AnyTime:
    """Equal to any float: the creation time (Unix seconds) the manager stores."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float)


ANY_TIME: Any = _AnyTime()


# --------------------------------------------------------------------------- in process


async def test_create_saves_under_a_fresh_token_and_an_empty_session_not_at_all(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    empty = SessionStore()
    await mode(empty, "create")
    assert empty.session_key is None  # the manager stores no empty session
    assert rows(db) == {}
    session = SessionStore()
    session["a"] = 1
    await mode(session, "create")
    key = session.session_key
    assert key is not None
    assert KEY_RE.fullmatch(key)
    assert session.modified
    [(data, expiry)] = rows(db).values()
    assert list(rows(db)) == [key]
    assert SessionStore().decode(data.decode()) == {"a": 1, CREATED_KEY: ANY_TIME}
    age = expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(weeks=2) - dt.timedelta(minutes=1) < age <= dt.timedelta(weeks=2)
    assert await mode(SessionStore(), "exists", key)


async def test_save_then_load_in_another_instance(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = SessionStore()
    session["message"] = MESSAGE
    session["when"] = [1, 2]
    await mode(session, "save")  # no key yet: creates one
    key = session.session_key
    assert key is not None
    [data] = [data for data, _ in rows(db).values()]
    # Django's own encoding: signed with SECRET_KEY, through SESSION_SERIALIZER.
    assert signing.loads(data.decode(), salt=session.key_salt, serializer=session.serializer) == {
        "message": MESSAGE,
        "when": [1, 2],
        CREATED_KEY: ANY_TIME,  # the start of its lifetime
    }
    again = SessionStore(key)
    assert await mode(again, "load") == {"message": MESSAGE, "when": [1, 2]}
    assert again.session_key == key


async def test_must_create_never_takes_the_given_key(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    first = SessionStore()
    first["owner"] = "first"
    await mode(first, "save")
    key = first.session_key
    assert key is not None
    before = rows(db)
    second = SessionStore(key)
    second._session_cache = {"owner": "second"}  # type: ignore[attr-defined]
    await mode(second, "save", True)
    assert second.session_key not in (None, key)  # a fresh token
    assert rows(db)[key] == before[key]  # the other session untouched


async def test_update_of_a_vanished_session_raises_update_error_and_stays_gone(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = await mode.saved(a=1)
    key = session.session_key
    assert key is not None
    db.execute("DELETE FROM sessions")  # logged out elsewhere meanwhile
    session["a"] = 2
    with pytest.raises(UpdateError):
        await mode(session, "save")
    assert rows(db) == {}


async def test_update_of_an_expired_session_raises_update_error(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = await mode.saved(a=1)
    db.execute("UPDATE sessions SET expiry = now() - interval '1 second'")
    before = rows(db)
    session["a"] = 2
    with pytest.raises(UpdateError):
        await mode(session, "save")
    assert rows(db) == before  # not revived


@pytest.mark.parametrize("case", ["missing", "expired", "garbage", "other secret", "not a dict"])
async def test_load_without_a_usable_row_is_a_fresh_session_without_the_key(
    sessions: None, mode: Mode, db: psycopg.Connection[Any], case: str
) -> None:
    key = "k" * 32
    data = {
        "missing": None,
        "expired": encoded({"a": 1}),
        "garbage": b"\xff\x00not signed",
        "other secret": signing.dumps(
            {"a": 1}, key="another-secret", salt=SessionStore().key_salt, compress=True
        ).encode(),
        "not a dict": signing.dumps(
            [1, 2], salt=SessionStore().key_salt, serializer=SessionStore().serializer
        ).encode(),
    }[case]
    if data is not None:
        expiry = in_(-1) if case == "expired" else in_(3600)
        db.execute(
            "INSERT INTO sessions (token, data, expiry) VALUES (%s, %s, %s)", (key, data, expiry)
        )
    session = SessionStore(key)
    assert await mode(session, "load") == {}
    assert session.session_key is None
    # Saving makes a new key: the cookie's key is never adopted.
    session["a"] = 2
    await mode(session, "save")
    assert session.session_key not in (None, key)


async def test_a_session_under_a_django_key_still_loads(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    """Sessions saved before the upgrade (Django's keys, Django's encoding) stay valid."""
    key = "d" * 32
    db.execute(
        "INSERT INTO sessions (token, data, expiry) VALUES (%s, %s, %s)",
        (key, encoded({"a": 1}), in_(3600)),
    )
    session = SessionStore(key)
    assert await mode(session, "load") == {"a": 1}
    session["b"] = 2
    await mode(session, "save")
    assert session.session_key == key
    assert await mode(SessionStore(key), "load") == {"a": 1, "b": 2}


async def test_data_the_request_did_not_change_is_not_signed_again(
    sessions: None, mode: Mode, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing is most of an encoding's cost: a save signs only data that changed."""
    key = (await mode.saved(cart=[1])).session_key
    assert key is not None
    signed: list[str] = []
    sign = signing.Signer.sign

    def counted(self: signing.Signer, value: str) -> str:
        signed.append(value)
        return sign(self, value)

    monkeypatch.setattr(signing.Signer, "sign", counted)
    before = rows(db)[key][0]

    unchanged = SessionStore(key)
    assert (await unchanged.aget("cart") if mode.is_async else unchanged["cart"]) == [1]
    await mode(unchanged, "save")
    assert signed == []
    assert rows(db)[key][0] == before

    # Changed in place (Django's `modified` stays False): signed once, then stored.
    changed = SessionStore(key)
    cart = await changed.aget("cart") if mode.is_async else changed["cart"]
    assert isinstance(cart, list)
    cart.append(2)
    await mode(changed, "save")
    assert len(signed) == 1
    assert await mode(SessionStore(key), "load") == {"cart": [1, 2]}
    assert rows(db)[key][0] != before


async def test_an_emptied_session_is_deleted(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = await mode.saved(a=1)
    key = session.session_key
    del session["a"]
    await mode(session, "save")
    assert session.session_key is None
    assert rows(db) == {}
    assert await mode(SessionStore(key), "load") == {}


@pytest.mark.parametrize(
    "value", ["", "short", "x" * 5000, "a\x00" * 8, 'with "quotes" and spaces', "é" * 32]
)
async def test_a_key_not_shaped_like_one_is_no_key_and_reaches_no_sql(
    sessions: None, mode: Mode, db: psycopg.Connection[Any], value: str
) -> None:
    session = SessionStore(value)
    assert session.session_key is None
    assert await mode(session, "exists", value) is False
    await mode(session, "delete", value)
    assert await mode(session, "load") == {}


async def test_cycle_key_keeps_the_data_and_deletes_the_old_row(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = await mode.saved(message=MESSAGE)
    old = session.session_key
    assert old is not None
    await mode(session, "cycle_key")  # takes effect at the save
    assert list(rows(db)) == [old]
    await mode(session, "save")
    new = session.session_key
    assert new is not None
    assert new != old
    assert list(rows(db)) == [new]
    assert not await mode(SessionStore(), "exists", old)
    assert await mode(SessionStore(new), "load") == {"message": MESSAGE}


async def test_delete_and_exists(sessions: None, mode: Mode, db: psycopg.Connection[Any]) -> None:
    session = await mode.saved(a=1)
    key = session.session_key
    assert key is not None
    assert await mode(session, "exists", key)
    await mode(session, "delete")
    assert rows(db) == {}
    assert not await mode(session, "exists", key)
    await mode(session, "delete", key)  # gone already: no error
    await mode(SessionStore(), "delete")  # no key at all: nothing to do


async def test_exists_is_false_for_an_expired_row(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = await mode.saved(a=1)
    db.execute("UPDATE sessions SET expiry = now() - interval '1 second'")
    assert not await mode(SessionStore(), "exists", session.session_key)


async def test_the_expiry_is_djangos(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = SessionStore()
    session.set_expiry(60)
    await mode(session, "save")
    [(_, expiry)] = rows(db).values()
    assert dt.timedelta(seconds=50) < expiry - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=60)
    at = dt.datetime(2100, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    session.set_expiry(at)
    await mode(session, "save")
    [(_, expiry)] = rows(db).values()
    assert expiry == at


async def test_naive_expiries_without_use_tz_are_local_time(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    with override_settings(USE_TZ=False, TIME_ZONE="America/New_York"):
        session = SessionStore()
        session.set_expiry(3600)
        await mode(session, "save")
    [(_, expiry)] = rows(db).values()
    left = expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < left <= dt.timedelta(hours=1)


async def test_clear_expired_deletes_only_expired_rows(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    live = await mode.saved(a=1)
    for _ in range(3):
        db.execute(
            "INSERT INTO sessions (token, data, expiry) VALUES (%s, '', now() - interval '1 s')",
            (new_token(),),
        )
    await mode.clear_expired()
    assert list(rows(db)) == [live.session_key]


def test_clearsessions_runs_the_batched_purge(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    db: psycopg.Connection[Any],
) -> None:
    db.execute(
        "INSERT INTO sessions (token, data, expiry) "
        "SELECT 'expired-' || i, '', now() - interval '1 s' FROM generate_series(1, 250) AS i"
    )
    db.execute(
        "INSERT INTO sessions (token, data, expiry) VALUES ('live-one', '', now() + interval '1 h')"
    )
    with configured(), override_settings(SESSION_ENGINE="sessionstore.integrations.django"):
        call_command("clearsessions")
    assert list(rows(db)) == ["live-one"]


async def test_a_database_failure_raises_and_is_never_no_session(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = await mode.saved(a=1)
    key = session.session_key
    db.execute("ALTER TABLE sessions RENAME TO sessions_gone")
    fresh = SessionStore(key)
    with pytest.raises(DatabaseError):
        await mode(fresh, "load")
    assert fresh.session_key == key  # not forgotten: the row is still there
    with pytest.raises(DatabaseError):
        await mode(fresh, "exists", key)
    session["a"] = 2
    with pytest.raises(DatabaseError):
        await mode(session, "save")
    with pytest.raises(DatabaseError):
        await mode.saved(b=1)
    db.execute("ALTER TABLE sessions_gone RENAME TO sessions")
    assert await mode(SessionStore(key), "load") == {"a": 1}


async def test_the_async_methods_run_on_the_loops_own_store(sessions: None) -> None:
    session = await Mode(True).saved(a=1)
    mine = await engine.astore()
    assert mine is await engine.astore()

    def in_another_loop() -> Any:
        async def run() -> Any:
            other = await engine.astore()
            assert await other.exists(session.session_key or "")
            await engine.aclose()
            return other

        return asyncio.run(run())

    other = await asyncio.to_thread(in_another_loop)
    assert other is not mine
    assert other.pool.closed
    # aclose() closed everything, this loop's pool too (in this loop, waited for):
    # the next use opens a new one.
    assert mine.pool.closed
    again = await engine.astore()
    assert again is not mine
    assert await again.exists(session.session_key or "")


# --------------------------------------------------------------------------- sessions per user


async def test_the_owner_is_the_logged_in_user(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    session = await mode.saved(message=MESSAGE)
    assert owners(db) == {session.session_key: None}
    await mode(session, "cycle_key")  # as login() does
    session[SESSION_KEY] = "42"
    await mode(session, "save")
    assert owners(db) == {session.session_key: "42"}
    session["more"] = 1
    await mode(session, "save")
    assert owners(db) == {session.session_key: "42"}


async def test_sessions_of_logout_everywhere_and_revoke(
    sessions: None, mode: Mode, db: psycopg.Connection[Any]
) -> None:
    devices = []
    for _ in range(3):
        session = await mode.saved(**{SESSION_KEY: "7"})
        devices.append(session)
    other_user = SessionStore()
    other_user[SESSION_KEY] = "8"
    await mode(other_user, "save")
    laptop, phone, tablet = devices

    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        if mode.is_async:
            return await getattr(engine, f"a{name}")(*args, **kwargs)
        return getattr(engine, name)(*args, **kwargs)

    listing = await call("sessions_of", "7", current=laptop)
    ids = {str(d.session_key): session_id(str(d.session_key)) for d in devices}
    assert sorted(s.id for s in listing) == sorted(ids.values())
    assert [s.id for s in listing if s.current] == [ids[str(laptop.session_key)]]
    assert all(s.data == {SESSION_KEY: "7"} for s in listing)  # as views see it
    tablets = ids[str(tablet.session_key)]
    assert await call("revoke", "8", tablets) is False  # not 8's session
    assert await call("revoke", "7", tablet.session_key) is False  # a key is no id
    assert await call("revoke", "7", tablets) is True
    assert await call("logout_everywhere", "7", keep=laptop) == 1  # the phone
    assert sorted(owners(db).values(), key=str) == ["7", "8"]
    assert await mode(SessionStore(phone.session_key), "load") == {}
    assert await call("logout_everywhere", "7") == 1
    assert list(owners(db).values()) == ["8"]


async def test_the_helpers_take_a_user_model_instance(sessions: None, mode: Mode) -> None:
    from django.contrib.auth.models import AnonymousUser, User

    user = User(pk=7, username="bob")  # what login() stores: the pk as text
    laptop = await mode.saved(**{SESSION_KEY: user._meta.pk.value_to_string(user)})
    [listed_session] = engine.sessions_of(user, current=laptop)
    assert listed_session.current
    assert await engine.alogout_everywhere(user) == 1
    assert engine.sessions_of(AnonymousUser()) == []


async def test_helpers_for_an_anonymous_user_and_bad_input(sessions: None) -> None:
    from django.contrib.auth.models import AnonymousUser, User

    for nobody in (AnonymousUser(), User(username="not saved yet")):
        assert engine.sessions_of(nobody) == []
        assert engine.logout_everywhere(nobody) == 0
        assert await engine.asessions_of(nobody) == []
        assert await engine.alogout_everywhere(nobody) == 0
        assert engine.revoke(nobody, "x" * 32) is False
    with pytest.raises(TypeError, match="user model instance or a str"):
        engine.sessions_of(42)
    with pytest.raises(ValueError, match="empty"):
        engine.logout_everywhere("")


async def test_helpers_without_owners(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
) -> None:
    with configured(owners=False):
        session = SessionStore()
        session[SESSION_KEY] = "7"
        await session.asave()  # owners off: saved without one
        with pytest.raises(OwnersNotEnabledError):
            engine.sessions_of("7")
        with pytest.raises(OwnersNotEnabledError):
            await engine.alogout_everywhere("7")
        await engine.aclose()


async def test_hashed_keys(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    mode: Mode,
    db: psycopg.Connection[Any],
) -> None:
    with configured(hash_tokens=True):
        session = await mode.saved(**{SESSION_KEY: "7"})
        key = session.session_key
        assert key is not None
        assert list(rows(db)) == [hash_token(key)]
        assert await mode(SessionStore(key), "load") == {SESSION_KEY: "7"}
        [listed_session] = engine.sessions_of("7", current=key)
        assert listed_session.id == session_id(hash_token(key))
        assert listed_session.current
        await engine.aclose()


@pytest.fixture
def no_last_login() -> Iterator[None]:
    """auth's ``update_last_login`` off: it saves the user, and there is no ORM database."""
    from django.contrib.auth.models import update_last_login

    user_logged_in.disconnect(dispatch_uid="update_last_login")
    yield
    user_logged_in.connect(update_last_login, dispatch_uid="update_last_login")


async def test_login_records_the_sign_in_time(
    sessions: None, mode: Mode, no_last_login: None
) -> None:
    from django.contrib.auth import alogin, login
    from django.contrib.auth.models import User
    from django.http import HttpRequest

    async def signed_in_within(current: Any, within: dt.timedelta | float) -> bool:
        if mode.is_async:
            return await engine.asigned_in_within(current, within)
        return engine.signed_in_within(current, within)

    async def log_in(request: HttpRequest, user: User) -> None:
        if mode.is_async:
            await alogin(request, user)
        else:
            login(request, user)

    request = HttpRequest()
    request.session = SessionStore()
    user = User(pk=7, username="bob", password="x")
    assert not await signed_in_within(request, 60)  # not signed in
    await log_in(request, user)
    assert await signed_in_within(request, 60)
    await mode(request.session, "save")
    again = SessionStore(request.session.session_key)
    assert await signed_in_within(again, 60)
    # Signed in an hour ago; then asked for the password again: login() once more,
    # which keeps the session key (the same user) and records the time anew.
    again[SIGNED_IN_KEY] -= 3600
    assert not await signed_in_within(again, 60)
    request.session = again
    await log_in(request, user)
    assert request.session.session_key == again.session_key
    assert await signed_in_within(request.session, dt.timedelta(minutes=1))
    with pytest.raises(ValueError, match="within must be positive"):
        await signed_in_within(request, 0)


@pytest.mark.parametrize("record", [False, True])
def test_the_middleware_records_the_device_only_when_asked(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    db: psycopg.Connection[Any],
    record: bool,
) -> None:
    from django.http import HttpRequest, HttpResponse

    from sessionstore.integrations.django import SessionMiddleware

    def view(request: HttpRequest) -> HttpResponse:
        request.session["a"] = 1
        return HttpResponse("ok")

    request = HttpRequest()
    request.META.update(REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT="Laptop/1.0")
    with configured(**({"record_devices": True} if record else {})):
        SessionMiddleware(view)(request)
    [(data, _)] = rows(db).values()
    device = SessionStore().decode(data.decode()).get(DEVICE_KEY)
    assert device == ({"ip": "192.0.2.1", "user_agent": "Laptop/1.0"} if record else None)


async def test_a_session_ending_within_the_grace_is_not_rotated(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    db: psycopg.Connection[Any],
) -> None:
    with configured(rotate_every=1, rotate_grace=30):
        session = SessionStore()
        session.set_expiry(10)  # shorter than the grace: no rotation, and no error
        session["a"] = 1
        await session.asave()
        assert list(rows(db)) == [session.session_key]
        await engine.aclose()


# --------------------------------------------------------------------------- settings


# Django warns that a DATABASES override confuses its ORM connections; these tests use
# no ORM, only the setting's values.
NO_ORM = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")


@NO_ORM
def test_the_dsn_defaults_to_the_default_database(
    django_configured: None, sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(sessionstore_dsn)
    databases = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": info["dbname"],
            "USER": info.get("user", ""),
            "PASSWORD": info.get("password", ""),
            "HOST": info["host"],
            "PORT": info["port"],
            "OPTIONS": {"connect_timeout": 10, "server_side_binding": False},
        }
    }
    try:
        with override_settings(DATABASES=databases, SESSIONSTORE={}):
            session = SessionStore()
            session["a"] = 1
            session.save()
            assert list(rows(db)) == [session.session_key]
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("sessionstore_setting", "databases", "message"),
    [
        ({"dsm": "x"}, {}, "unknown keys \\['dsm'\\]"),
        ({"owners": "yes"}, {}, "'owners'.*wrong type"),
        ({"max_size": True}, {}, "'max_size'.*wrong type"),
        ({"min_size": 5, "max_size": 2}, {}, "min_size <= max_size"),
        ({"timeout": 0}, {}, "\\['timeout'\\] must be positive"),
        ({"table": ""}, {}, "table name must not be empty"),
        ({"rotate_every": 0}, {}, "rotate_every must be positive"),
        ({"rotate_every": 600, "rotate_grace": 15 * 24 * 3600}, {}, "shorter than idle_timeout"),
        ({"rotate_grace": "30"}, {}, "'rotate_grace'.*wrong type"),
        ({"record_devices": 1}, {}, "'record_devices'.*wrong type"),
        ({"max_sessions_per_owner": True}, {}, "'max_sessions_per_owner'.*wrong type"),
        ({"max_sessions_per_owner": 0, "owners": True}, {}, "max_sessions_per_owner.*1"),
        ({"max_sessions_per_owner": 2}, {}, "max_sessions_per_owner.*owners"),
        ({"encryption": b"k" * 32}, {}, "encryption must be a sessionstore.crypto.Keyring"),
        ({}, {}, "no 'dsn' and settings.DATABASES has no 'default'"),
        (
            {},
            {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}},
            "is not PostgreSQL",
        ),
        (
            {"database": "other"},
            {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}},
            "has no 'other'",
        ),
        (
            {},
            {
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": "x",
                    "OPTIONS": {"nope": 1},
                }
            },
            "no valid connection string",
        ),
    ],
)
@NO_ORM
def test_bad_settings_are_improperly_configured(
    django_configured: None,
    sessionstore_setting: dict[str, Any],
    databases: dict[str, Any],
    message: str,
) -> None:
    try:
        with (
            override_settings(SESSIONSTORE=sessionstore_setting, DATABASES=databases),
            pytest.raises(ImproperlyConfigured, match=message),
        ):
            SessionStore("k" * 32).load()
    finally:
        engine.close()


async def test_sessions_are_encrypted_at_rest_with_a_keyring(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    mode: Mode,
    db: psycopg.Connection[Any],
) -> None:
    from sessionstore.crypto import Keyring

    with configured(encryption=Keyring(Keyring.generate_key())):
        try:
            session = await mode.saved(message=MESSAGE)
            [data] = [data for data, _ in rows(db).values()]
            assert MESSAGE.encode() not in data
            again = SessionStore(session.session_key)
            assert await mode(again, "get", "message") == MESSAGE
        finally:
            await engine.aclose()


@NO_ORM
def test_the_engine_connects_with_what_djangos_backend_computes(
    django_configured: None,
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backend that supplies credentials itself (IAM or Azure tokens) keeps working."""
    from django.db.backends.postgresql import base

    issued: list[str] = []

    class DatabaseWrapper(base.DatabaseWrapper):
        def get_connection_params(self) -> dict[str, Any]:
            params: dict[str, Any] = super().get_connection_params()
            issued.append(f"token-{len(issued)}")  # a fresh short-lived token each time
            params["password"] = issued[-1]
            return params

    backend = types.ModuleType("iam_backend.base")
    backend.DatabaseWrapper = DatabaseWrapper  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "iam_backend", types.ModuleType("iam_backend"))
    monkeypatch.setitem(sys.modules, "iam_backend.base", backend)
    info = psycopg.conninfo.conninfo_to_dict(sessionstore_dsn)
    databases = {
        "default": {
            "ENGINE": "iam_backend",  # no PASSWORD here: the backend supplies it
            **{key.upper(): info[key] for key in ("host", "port", "user")},
            "NAME": info["dbname"],
        }
    }
    try:
        with override_settings(DATABASES=databases, SESSIONSTORE={}):
            session = SessionStore()
            session["a"] = 1
            session.save()
            assert list(rows(db)) == [session.session_key]
            with engine.store().pool.connection() as conn:
                assert conn.info.password in issued
    finally:
        engine.close()


def test_nothing_connects_before_first_use(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    # The engine's connections carry their own application_name: other backends of
    # the database (the fixtures', a previous test's on their way out) don't count.
    name = "django-engine-under-test"

    def backends() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    with configured(dsn=psycopg.conninfo.make_conninfo(sessionstore_dsn, application_name=name)):
        token = new_token()
        session = SessionStore(token)
        assert session.session_key == token
        assert backends() == 0
        session.load()
        assert backends() >= 1
        engine.close()
        wait_until(lambda: backends() == 0)


async def test_a_settings_change_closes_the_running_loops_pool(
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    name = "django-engine-loop-pool"

    def backends() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    with configured(dsn=psycopg.conninfo.make_conninfo(sessionstore_dsn, application_name=name)):
        first = await engine.astore()
        assert not await first.exists("k" * 32)
        assert backends() >= 1
    # Leaving override_settings closed the pool, in this loop, which is running.
    deadline = asyncio.get_running_loop().time() + 10
    while backends() > 0:  # the close runs as a task of this loop: let it
        assert asyncio.get_running_loop().time() < deadline, "the pool was not closed"
        await asyncio.sleep(0.01)
    assert first.pool.closed
    with configured():
        assert await engine.astore() is not first  # the new settings, a new pool
        await engine.aclose()


# --------------------------------------------------------------------------- over HTTP

#: The example's ASGI app under uvicorn, with `create_app`'s options as JSON.
UVICORN = (
    "import json, sys, uvicorn\n"
    "from sessionstore.examples.django_app import create_app\n"
    "app = create_app(asgi=True, **json.loads(sys.argv[1]))\n"
    "uvicorn.run(app, fd=int(sys.argv[2]), lifespan='on', log_level='info')\n"
)
#: The secret both the servers and this process sign session data with.
SECRET = "test-secret-key"


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def children_of(pid: int) -> list[int]:
    found = []
    for member in group_members(pid):
        stat = Path(f"/proc/{member}/stat").read_text()
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(member)
    return found


@dataclass
class Server:
    """The example app in a server process of its own (the leader of its process group)."""

    kind: str  # "wsgi" (gunicorn) or "asgi" (uvicorn)
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    clients: list[Client] = field(default_factory=list)

    def client(self) -> Client:
        return Client(self.url)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the whole group; fail if any process of it outlives the bound."""
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
            pytest.fail(f"{self.kind} server ignored SIGTERM; output:\n{self.output()}")
        left = group_members(pgid)
        if left:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail(f"{self.kind} server left processes {left}; output:\n{self.output()}")
        if self.kind == "asgi":
            # uvicorn raises the signal again once it has stopped; what tells a clean
            # stop is its log: the lifespan shutdown (which closes the pools) completed.
            assert code == -signal.SIGTERM, self.output()
            assert "Application shutdown complete." in self.output()
        else:
            assert code == 0, f"{self.kind} server exited {code}; output:\n{self.output()}"


def start_server(
    kind: str, dsn: str, log: Path, app: str = "sessionstore.examples.django_app", **options: Any
) -> Server:
    """Start the example app on a socket bound here and handed over (no port race).

    ``kind`` "contract" serves `_django_contract_app` under gunicorn with one gthread
    worker of many threads: its requests overlap, and share its gates.

    Requests queue in the socket's backlog until the server accepts them, so no
    readiness wait is needed; if the server dies, its socket closes and requests fail
    at once.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port, fd = sock.getsockname()[1], sock.fileno()
    options = {"secret_key": SECRET, **options}
    if kind in ("wsgi", "contract"):
        # gunicorn parses the call's arguments as literals.
        call = ", ".join(f"{name}={value!r}" for name, value in options.items())
        workers: tuple[str, ...] = ("--workers", "2")
        if kind == "contract":
            app = "_django_contract_app"
            workers = ("--workers", "1", "--worker-class", "gthread", "--threads", "160")
        argv = [
            *(sys.executable, "-m", "gunicorn", "--preload", *workers),
            *("--bind", f"fd://{fd}", "--graceful-timeout", "10"),
            f"{app}:create_app({call})",
        ]
    else:
        argv = [sys.executable, "-c", UVICORN, json.dumps(options), str(fd)]
    tests = str(Path(__file__).resolve().parent)  # for _django_contract_app
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "SESSIONSTORE_DSN": dsn, "PYTHONPATH": path}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            pass_fds=[fd],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sock.close()  # the server holds its own copy
    return Server(kind, f"http://127.0.0.1:{port}", proc, log)


@pytest.fixture(params=["wsgi", "asgi"])
def serve(
    request: pytest.FixtureRequest, sessionstore_dsn: str, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """Start the example app under gunicorn (WSGI) and under uvicorn (ASGI)."""
    create_table(sessionstore_dsn, owners=True)
    servers: list[Server] = []

    def start(dsn: str | None = None, **options: Any) -> Server:
        log = tmp_path / f"{request.param}-{len(servers)}.log"
        server = start_server(request.param, dsn or sessionstore_dsn, log, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def example(serve: Callable[..., Server]) -> Server:
    return serve()


def key_of(client: Client) -> str | None:
    return client.token(COOKIE)


def stored(db: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """The sessions table, decoded with the servers' secret."""
    with override_settings(SECRET_KEY=SECRET):
        decoder = SessionStore()
        decoded = {key: decoder.decode(data.decode()) for key, (data, _) in rows(db).items()}
    for data in decoded.values():
        assert isinstance(data.pop(CREATED_KEY), float)  # the start of its lifetime
    return decoded


def test_put_then_get(
    example: Server, db: psycopg.Connection[Any], django_configured: None
) -> None:
    client = example.client()
    put = client.get("/put")
    assert (put.status, put.body) == (200, "Stored a message in your session.\n")
    got = client.get("/get")
    assert (got.status, got.body) == (200, MESSAGE + "\n")
    key = key_of(client)
    assert key is not None
    assert KEY_RE.fullmatch(key)
    assert stored(db) == {key: {"message": MESSAGE}}


def test_two_clients_never_see_each_others_data(
    example: Server, db: psycopg.Connection[Any]
) -> None:
    first, second = example.client(), example.client()
    first.get("/put")
    assert second.get("/get").body == "\n"
    assert second.token(COOKIE) is None  # reading an empty session sets no cookie
    second.get("/put")
    first_key, second_key = key_of(first), key_of(second)
    assert first_key is not None
    assert second_key is not None
    assert first_key != second_key
    assert sorted(rows(db)) == sorted([first_key, second_key])


def test_the_session_expires(serve: Callable[..., Server], db: psycopg.Connection[Any]) -> None:
    example = serve(idle_timeout=2)
    client = example.client()
    key = issued_token(client.get("/put"))
    assert client.get("/get", cookie=f"{COOKIE}={key}").body == MESSAGE + "\n"

    def expired() -> bool:
        row = db.execute(
            "SELECT count(*) FROM sessions WHERE current_timestamp < expiry"
        ).fetchone()
        return row is not None and row[0] == 0

    wait_until(expired)
    # The browser would drop the cookie too; send it anyway, as a stale tab would.
    reply = client.get("/get", cookie=f"{COOKIE}={key}")
    assert (reply.status, reply.body) == (200, "\n")
    [header] = reply.cookies  # as Django's db backend: the dead key's cookie is deleted
    assert header.startswith(f'{COOKIE}="";')
    put = client.get("/put", cookie=f"{COOKIE}={key}")
    assert issued_token(put) != key


def test_login_renews_the_key_and_deletes_the_old_row(
    example: Server, db: psycopg.Connection[Any], django_configured: None
) -> None:
    client = example.client()
    client.get("/put")
    old = key_of(client)
    reply = client.get("/login")
    assert (reply.status, reply.body) == (
        200,
        f"Logged in as {USER}; your session has a new token.\n",
    )
    new = key_of(client)
    assert new is not None
    assert old is not None
    assert new != old
    assert stored(db) == {new: {"message": MESSAGE, SESSION_KEY: USER, SIGNED_IN_KEY: ANY_TIME}}
    assert owners(db) == {new: USER}
    assert client.get("/get").body == MESSAGE + "\n"
    assert client.get("/get", cookie=f"{COOKIE}={old}").body == "\n"


def test_logout_deletes_the_row_and_the_cookie(
    example: Server, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    client.get("/login")
    key = key_of(client)
    assert list(rows(db)) == [key]
    reply = client.get("/logout")
    assert (reply.status, reply.body) == (200, "Logged out; your session is gone.\n")
    assert rows(db) == {}
    [header] = reply.cookies
    assert header.startswith(f'{COOKIE}="";')
    assert "expires=Thu, 01 Jan 1970" in header
    assert key_of(client) is None
    assert client.get("/get", cookie=f"{COOKIE}={key}").body == "\n"
    assert rows(db) == {}


@pytest.mark.parametrize(
    "value",
    ["garbage", "x" * 5000, "a%00b" * 4, '"quoted\\000value"', "A" * 31 + "!", "", "é" * 32],
)
def test_a_tampered_cookie_is_a_new_session(
    example: Server, db: psycopg.Connection[Any], value: str
) -> None:
    client = example.client()
    got = client.get("/get", cookie=f"{COOKIE}={value}")
    assert (got.status, got.body) == (200, "\n")
    put = client.get("/put", cookie=f"{COOKIE}={value}")
    assert put.status == 200
    issued = issued_token(put)
    assert KEY_RE.fullmatch(issued)
    assert list(rows(db)) == [issued]


def test_an_unknown_key_is_never_adopted(example: Server, db: psycopg.Connection[Any]) -> None:
    """Session fixation: a key planted in the victim's browser must not become theirs."""
    planted = "p" * 32
    client = example.client()
    assert client.get("/get", cookie=f"{COOKIE}={planted}").body == "\n"
    for path in ("/put", "/login"):
        reply = client.get(path, cookie=f"{COOKIE}={planted}")
        assert reply.status == 200
        assert planted not in issued_token(reply)
    assert planted not in rows(db)


def test_data_signed_with_another_secret_is_not_trusted(
    example: Server, db: psycopg.Connection[Any]
) -> None:
    key = "f" * 32
    # Signed in this process without its settings (only some tests configure them):
    # the engine's salt as Django's SessionBase.key_salt makes it, and no fallbacks.
    signer = signing.TimestampSigner(
        key="not-the-secret", salt="django.contrib.sessions.SessionStore", fallback_keys=[]
    )
    forged = signer.sign_object({SESSION_KEY: "mallory"}, compress=True)
    db.execute(
        "INSERT INTO sessions (token, data, expiry) VALUES (%s, %s, now() + interval '1 hour')",
        (key, forged.encode()),
    )
    client = example.client()
    assert client.get("/sessions", cookie=f"{COOKIE}={key}").status == 403


def test_headers_for_caches(example: Server) -> None:
    client = example.client()
    reply = client.get("/")  # never touched the session
    assert reply.headers.get_all("Vary") is None
    assert reply.headers.get_all("Cache-Control") is None
    reply = client.get("/put")  # sets the cookie
    assert reply.headers.get_all("Vary") == ["Cookie"]
    assert reply.headers.get_all("Cache-Control") == ['no-cache="Set-Cookie"']
    reply = client.get("/get")  # used the session, set no cookie
    assert reply.cookies == []
    assert reply.headers.get_all("Vary") == ["Cookie"]
    assert reply.headers.get_all("Cache-Control") is None
    reply = client.get("/logout")  # deletes the cookie
    assert reply.headers.get_all("Vary") == ["Cookie"]
    assert reply.headers.get_all("Cache-Control") == ['no-cache="Set-Cookie"']


def test_two_devices_log_out_everywhere(example: Server, db: psycopg.Connection[Any]) -> None:
    laptop, phone = example.client(), example.client()
    for device in (laptop, phone):
        assert device.get("/put").status == 200
        assert device.get("/login").status == 200
    mine, theirs = key_of(laptop), key_of(phone)
    assert mine is not None
    assert theirs is not None
    assert owners(db) == {mine: USER, theirs: USER}
    for device, own, other in ((laptop, mine, theirs), (phone, theirs, mine)):
        reply = device.get("/sessions")
        lines = listed(reply)
        assert len(lines) == 2
        [this] = [line for line in lines if "(this one)" in line]
        [that] = [line for line in lines if "(this one)" not in line]
        assert this.startswith(f"  {session_id(own)}  created ")
        assert that.startswith(f"  {session_id(other)}  created ")
        for key in (own, other):  # no key, nor a prefix of one
            assert key[:8] not in reply.body
    reply = laptop.get("/logout-everywhere")
    assert (reply.status, reply.body) == (200, "Logged out 1 other session(s); this one stays.\n")
    assert owners(db) == {mine: USER}
    assert laptop.get("/get").body == MESSAGE + "\n"
    assert key_of(laptop) == mine
    assert phone.get("/sessions").status == 403
    assert phone.get("/get").body == "\n"
    assert owners(db) == {mine: USER}


def test_with_hashed_keys_the_table_holds_no_key(
    serve: Callable[..., Server], db: psycopg.Connection[Any]
) -> None:
    example = serve(hash_tokens=True)
    laptop, phone = example.client(), example.client()
    for device in (laptop, phone):
        device.get("/login")
    key = key_of(laptop)
    assert key is not None
    assert hash_token(key) in rows(db)
    assert key not in rows(db)
    [this] = [line for line in listed(laptop.get("/sessions")) if "(this one)" in line]
    assert this.startswith(f"  {session_id(hash_token(key))}  ")
    assert hash_token(key)[:8] not in this
    assert "Logged out 1 other" in laptop.get("/logout-everywhere").body
    assert phone.get("/sessions").status == 403


def test_clearsessions_deletes_what_the_app_let_expire(
    serve: Callable[..., Server],
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    db: psycopg.Connection[Any],
) -> None:
    example = serve(idle_timeout=3600)
    stale, fresh = example.client(), example.client()
    stale.get("/put")
    fresh.get("/put")
    db.execute(
        "UPDATE sessions SET expiry = now() - interval '1 s' WHERE token = %s", (key_of(stale),)
    )
    with configured():
        call_command("clearsessions")
    assert list(rows(db)) == [key_of(fresh)]
    assert fresh.get("/get").body == MESSAGE + "\n"


# --------------------------------------------------------------------------- the database down


def assert_server_error(reply: Reply, key: str) -> None:
    assert reply.status == 500
    assert "<h1>Server Error (500)</h1>" in reply.body  # Django's own page (DEBUG off)
    for leak in ("Traceback", "DatabaseError", "psycopg", "sessions", key):
        assert leak not in reply.body
    assert reply.cookies == []  # neither a new cookie nor a deleted one


@pytest.mark.parametrize("path", ["/get", "/put", "/login", "/logout", "/sessions"])
def test_a_failing_table_is_a_500_and_the_session_survives(
    example: Server, db: psycopg.Connection[Any], path: str, django_configured: None
) -> None:
    client = example.client()
    client.get("/login")
    client.get("/put")
    key = key_of(client)
    assert key is not None
    before = stored(db)
    db.execute("ALTER TABLE sessions RENAME TO sessions_gone")
    assert_server_error(client.get(path), key)
    db.execute("ALTER TABLE sessions_gone RENAME TO sessions")
    assert stored(db) == before
    assert key_of(client) == key
    assert client.get("/get").body == MESSAGE + "\n"


def test_the_database_down_is_a_500_and_the_session_survives(
    serve: Callable[..., Server], sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    up = serve()
    client = up.client()
    client.get("/put")
    key = key_of(client)
    assert key is not None
    # A port that is bound but not listening: every connection is refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        dsn = psycopg.conninfo.make_conninfo(sessionstore_dsn, host="127.0.0.1", port=port)
        down = serve(dsn=dsn, timeout=2)
        for path in ("/get", "/put", "/login", "/logout"):
            assert_server_error(down.client().get(path, cookie=f"{COOKIE}={key}"), key)
    assert list(rows(db)) == [key]
    assert client.get("/get").body == MESSAGE + "\n"


# --------------------------------------------------------------------------- the servers


def test_gunicorn_preload_forks_two_workers_and_stop_ends_them_all(
    sessionstore_dsn: str, tmp_path: Path
) -> None:
    create_table(sessionstore_dsn, owners=True)
    server = start_server("wsgi", sessionstore_dsn, tmp_path / "gunicorn.log")
    try:
        client = server.client()
        assert client.get("/put").status == 200  # served: the master has forked
        wait_until(lambda: len(children_of(server.proc.pid)) == 2)
        workers = children_of(server.proc.pid)
        for _ in range(10):
            assert client.get("/get").body == MESSAGE + "\n"
    finally:
        server.stop()
    # The workers are in the master's group: none of it is left, not even a worker.
    assert group_members(server.proc.pid) == []
    assert len(workers) == 2


def test_django_is_imported_only_by_the_integration() -> None:
    code = (
        "import sys, sessionstore, sessionstore.integrations, sessionstore.cli\n"
        "assert 'django' not in sys.modules\n"
        "sys.modules['django'] = None\n"
        "try:\n"
        "    import sessionstore.integrations.django\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert 'pip install "sessionstore[django]"' in out


# --------------------------------------------------------------------------- the session contract


@pytest.fixture
def contract_served(
    sessionstore_dsn: str, tmp_path: Path
) -> Iterator[Callable[..., contract.Served]]:
    """The contract app under gunicorn (one gthread worker), with `configure`'s options."""
    create_table(sessionstore_dsn, owners=True)
    servers: list[Server] = []

    def start(**options: Any) -> contract.Served:
        log = tmp_path / f"contract-{len(servers)}.log"
        servers.append(start_server("contract", sessionstore_dsn, log, **options))
        return contract.Served(servers[-1].url, COOKIE)

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("count", [2, 4])
def test_overlapping_requests_keep_every_key(
    contract_served: Callable[..., contract.Served], count: int
) -> None:
    contract.check_overlapping_requests_keep_every_key(contract_served(), count)


def test_many_sessions_lose_no_key(contract_served: Callable[..., contract.Served]) -> None:
    contract.check_many_sessions_lose_no_key(contract_served())


def test_a_logout_racing_a_slower_request_stays_logged_out(
    contract_served: Callable[..., contract.Served], db: psycopg.Connection[Any]
) -> None:
    contract.check_a_logout_racing_a_slower_request_stays_logged_out(contract_served(), db)


def test_a_read_only_request_writes_nothing(
    contract_served: Callable[..., contract.Served], db: psycopg.Connection[Any]
) -> None:
    contract.check_a_read_only_request_writes_nothing(contract_served(), db)


def test_the_idle_timeout_ends_a_session(
    contract_served: Callable[..., contract.Served],
) -> None:
    contract.check_the_idle_timeout_ends_a_session(contract_served(idle_timeout=2), 2)


def test_the_lifetime_ends_a_busy_session(
    contract_served: Callable[..., contract.Served],
) -> None:
    app = contract_served(idle_timeout=2, lifetime=4, renew_after=0)
    contract.check_the_lifetime_ends_a_busy_session(app, 2, 4)


#: The per-user checks' app (see `_session_contract`).
PER_USER: dict[str, Any] = {
    "idle_timeout": 60,
    "max_sessions_per_owner": contract.CAP,
    "rotate_every": contract.ROTATE_EVERY,
    "rotate_grace": contract.ROTATE_GRACE,
    "record_devices": True,
}


@pytest.mark.parametrize("check", contract.PER_USER_CHECKS)
def test_sessions_per_user(
    contract_served: Callable[..., contract.Served], check: Callable[[contract.Served], None]
) -> None:
    check(contract_served(**PER_USER))


@pytest.mark.parametrize("setting", ["renew_after", "SESSION_SAVE_EVERY_REQUEST"])
def test_renewal_on_every_request(
    django_configured: None,
    configured: Callable[..., contextlib.AbstractContextManager[None]],
    db: psycopg.Connection[Any],
    setting: str,
) -> None:
    from django.http import HttpRequest, HttpResponse

    from sessionstore.integrations.django import SessionMiddleware

    every = setting == "SESSION_SAVE_EVERY_REQUEST"
    options = {} if every else {"renew_after": 0}
    with override_settings(SESSION_SAVE_EVERY_REQUEST=every), configured(**options):
        session = SessionStore()
        session["a"] = 1
        session.save()
        key = session.session_key
        before = rows(db)

        def view(request: HttpRequest) -> HttpResponse:
            return HttpResponse(str(request.session["a"]))  # read only

        request = HttpRequest()
        request.COOKIES[COOKIE] = str(key)
        response = SessionMiddleware(view)(request)
        assert isinstance(response, HttpResponse)
        assert response.cookies[COOKIE].value == key  # sent again, a new expiry
        assert rows(db)[str(key)][1] > before[str(key)][1]
