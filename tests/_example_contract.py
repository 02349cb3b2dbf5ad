"""The behaviour the Flask and Quart example apps share, tested on both over HTTP.

The two integrations are one session class and one adapter on the session manager (see
``sessionstore.integrations._session_interface``), and the two example apps have the
same routes, so one body tests both: test_integration_flask.py and
test_integration_quart.py each run `ExampleAppContract` on their own ``serve`` and
``example`` fixtures (the example app served on the test's database).
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import re
from collections.abc import Callable
from typing import Any, Protocol

import psycopg
import pytest
from _http import Client, issued_token, listed
from _support import new_token, table_rows, wait_until

from sessionstore import Store
from sessionstore.manager import CREATED_KEY, DEVICE_KEY, session_id

MESSAGE = "Hello from a session!"
USER = "alice"  # whom the examples' /login logs in
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


class ExampleApp(Protocol):
    """A served example app, as the ``example`` fixtures give it."""

    def client(self) -> Client: ...


def tokens(db: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in table_rows(db)]


def owners(db: psycopg.Connection[Any]) -> dict[str, str | None]:
    return dict(db.execute("SELECT token, owner FROM sessions").fetchall())


def check_two_devices_log_out_everywhere(example: ExampleApp, db: psycopg.Connection[Any]) -> None:
    """Log in on two devices, list them, log out everywhere from one: the other is out.

    A function, not only a contract method, so that apps served other than by the
    contract's fixtures (the Starlette example) check the same behaviour. Each line of
    ``/sessions`` is ``  <id>  ...  expires <iso>[  (this one)]``: the session's
    `UserSession.id` first (the example's store keeps raw tokens as keys), never a
    token or a prefix of one.
    """
    laptop, phone = example.client(), example.client()
    for device in (laptop, phone):
        assert device.get("/put").status == 200
        assert device.get("/login").status == 200
    mine, theirs = laptop.token(), phone.token()
    assert mine is not None
    assert theirs is not None
    assert owners(db) == {mine: USER, theirs: USER}
    for device, other in ((laptop, theirs), (phone, mine)):
        # Read just before the request: every request slides its own session's expiry
        # when it is saved, so the previous device's /sessions moved its row.
        expiries = {token: expiry for token, _, expiry in table_rows(db)}
        reply = device.get("/sessions")
        lines = listed(reply)
        assert len(lines) == 2
        [this] = [line for line in lines if "(this one)" in line]
        [that] = [line for line in lines if "(this one)" not in line]
        own = device.token()
        assert own is not None
        assert this.split()[0] == session_id(own)
        assert that.split()[0] == session_id(other)
        for token in (own, other):  # ids only: neither a token nor a prefix of one
            expires = expiries[token].astimezone(dt.UTC).isoformat(timespec="seconds")
            assert f"  expires {expires}" in (this if token == own else that)
            assert token[:8] not in reply.body

    reply = laptop.get("/logout-everywhere")
    assert (reply.status, reply.body) == (
        200,
        "Logged out 1 other session(s); this one stays.\n",
    )
    assert owners(db) == {mine: USER}
    # The laptop stays logged in, with its data and its token.
    assert laptop.get("/get").body.strip() == MESSAGE
    assert len(listed(laptop.get("/sessions"))) == 1
    assert laptop.token() == mine
    # The phone is logged out: its cookie names nothing, and using it brings nothing back.
    assert phone.get("/sessions").status == 403
    assert phone.get("/get").body.strip() == ""
    assert phone.get("/logout-everywhere").status == 403
    assert owners(db) == {mine: USER}


def check_a_device_is_revoked_by_its_listed_id(example: ExampleApp) -> None:
    """Log in on two devices; one ends the other by the id ``/sessions`` lists (``/revoke``).

    A function, as `check_two_devices_log_out_everywhere`, for the Starlette and
    Litestar examples too; over HTTP only (Litestar's stored keys are namespaced).
    Each line shows the device as "<user agent> at <IP address>".
    """
    laptop, phone = example.client(), example.client()
    for device, agent in ((laptop, "Laptop/1.0"), (phone, "Phone/2.0")):
        assert device.get("/put").status == 200
        assert device.get("/login", agent=agent).status == 200
    [that] = [line for line in listed(laptop.get("/sessions")) if "(this one)" not in line]
    assert "  Phone/2.0 at 127.0.0.1  " in that
    theirs, that_id = phone.token(), that.split()[0]
    assert theirs is not None
    assert laptop.get(f"/revoke?id={theirs}").status == 404  # a token is no id
    assert laptop.get(f"/revoke?id={that_id}").status == 200
    assert phone.get("/get").body.strip() == ""
    assert laptop.get(f"/revoke?id={that_id}").status == 404
    [this] = listed(laptop.get("/sessions"))
    assert example.client().get(f"/revoke?id={this.split()[0]}").status == 404  # nobody's
    assert laptop.get("/get").body.strip() == MESSAGE


class ExampleAppContract:
    """What both example apps do over HTTP; subclass it in a module with the fixtures."""

    def test_put_then_get(self, example: ExampleApp, db: psycopg.Connection[Any]) -> None:
        client = example.client()
        put = client.get("/put")
        assert put.status == 200
        got = client.get("/get")
        assert got.status == 200
        assert got.body.strip() == MESSAGE
        token = client.token()
        assert token is not None
        assert TOKEN_RE.fullmatch(token)
        assert tokens(db) == [token]

    def test_a_second_client_does_not_see_the_first_ones_data(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        first, second = example.client(), example.client()
        first.get("/put")
        assert second.get("/get").body.strip() == ""
        second.get("/put")
        first_token, second_token = first.token(), second.token()
        assert first_token is not None
        assert second_token is not None
        assert first_token != second_token
        assert sorted(tokens(db)) == sorted([first_token, second_token])

    def test_the_cookie_holds_only_the_token_and_the_data_is_json(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        client = example.client()
        reply = client.get("/put")
        [header] = reply.cookies
        value = header.split(";", 1)[0].split("=", 1)[1]
        assert TOKEN_RE.fullmatch(value)
        [(token, data, _)] = table_rows(db)
        assert token == value
        stored = json.loads(bytes(data))
        assert isinstance(stored.pop(CREATED_KEY), float)  # when its lifetime began
        # The examples record devices (SESSION_RECORD_DEVICES) for /sessions.
        assert stored.pop(DEVICE_KEY)["ip"] == "127.0.0.1"
        assert stored == {"_permanent": True, "message": MESSAGE}

    def test_renew_token_keeps_the_data_and_kills_the_old_token(
        self, example: ExampleApp, session_store: Store, db: psycopg.Connection[Any]
    ) -> None:
        client = example.client()
        client.get("/put")
        old = client.token()
        reply = client.get("/login")
        assert reply.status == 200
        new = client.token()
        assert new is not None
        assert old is not None
        assert new != old
        assert TOKEN_RE.fullmatch(new)
        assert tokens(db) == [new]
        assert client.get("/get").body.strip() == MESSAGE
        assert session_store.find(old) is None
        assert client.get("/get", cookie=f"session={old}").body.strip() == ""

    def test_logout_deletes_the_row_and_the_cookie(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        client = example.client()
        client.get("/put")
        token = client.token()
        assert tokens(db) == [token]
        reply = client.get("/logout")
        assert reply.status == 200
        assert tokens(db) == []
        [header] = reply.cookies
        assert header.startswith("session=;")
        assert "Expires=Thu, 01 Jan 1970" in header
        assert client.token() is None
        assert client.get("/get", cookie=f"session={token}").body.strip() == ""

    @pytest.mark.parametrize(
        "value",
        [
            "garbage",
            "x" * 5000,
            "a%00b",
            '"quoted"',
            "tok\\u0000en",
            "A" * 42 + "!",
            "",
        ],
    )
    def test_a_tampered_cookie_is_a_new_session(
        self, example: ExampleApp, db: psycopg.Connection[Any], value: str
    ) -> None:
        client = example.client()
        got = client.get("/get", cookie=f"session={value}")
        assert (got.status, got.body.strip()) == (200, "")
        put = client.get("/put", cookie=f"session={value}")
        assert put.status == 200
        [header] = put.cookies
        issued = header.split(";", 1)[0].split("=", 1)[1]
        assert TOKEN_RE.fullmatch(issued)
        assert issued != value
        assert tokens(db) == [issued]

    def test_an_unknown_token_is_never_adopted(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        """Session fixation: a token planted in the victim's browser must not become theirs."""
        planted = new_token()
        client = example.client()
        assert client.get("/get", cookie=f"session={planted}").body.strip() == ""
        for path in ("/put", "/login"):
            reply = client.get(path, cookie=f"session={planted}")
            assert reply.status == 200
            [header] = reply.cookies
            assert planted not in header
        assert planted not in tokens(db)

    def test_untouched_sessions_write_nothing(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        client = example.client()
        for path in ("/get", "/no-such-page", "/logout"):
            reply = client.get(path)
            assert reply.cookies == []
        assert tokens(db) == []

    def test_a_read_when_renewal_is_due_extends_the_row(
        self, serve: Callable[..., ExampleApp], db: psycopg.Connection[Any]
    ) -> None:
        example = serve(lifetime=dt.timedelta(minutes=10))
        client = example.client()
        client.get("/put")
        # 1 of 10 minutes left: well past the renewal share (10% of the idle timeout).
        db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")
        reply = client.get("/get")
        assert reply.cookies, "a permanent session's cookie is refreshed too"
        [(_, _, expiry)] = table_rows(db)
        assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=9)

    def test_without_refresh_an_unmodified_session_is_not_written(
        self, serve: Callable[..., ExampleApp], db: psycopg.Connection[Any]
    ) -> None:
        example = serve(lambda app: app.config.update(SESSION_REFRESH_EACH_REQUEST=False))
        client = example.client()
        client.get("/put")
        db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")
        reply = client.get("/get")
        assert reply.body.strip() == MESSAGE
        assert reply.cookies == []
        [(_, _, expiry)] = table_rows(db)
        assert expiry - dt.datetime.now(dt.UTC) < dt.timedelta(minutes=2)

    def test_two_devices_log_out_everywhere(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        check_two_devices_log_out_everywhere(example, db)

    def test_revoke_ends_one_listed_session_of_the_user(self, example: ExampleApp) -> None:
        check_a_device_is_revoked_by_its_listed_id(example)

    def test_login_creates_an_owned_row_and_logout_deletes_it(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        client = example.client()
        assert client.get("/sessions").status == 403  # no session, nobody's
        client.get("/login")
        token = client.token()
        assert token is not None
        assert owners(db) == {token: USER}
        # Later saves keep the owner (the data holds it too).
        client.get("/put")
        assert owners(db) == {token: USER}
        assert json.loads(bytes(table_rows(db)[0][1]))["_session_owner"] == USER
        client.get("/logout")
        assert owners(db) == {}
        assert client.get("/sessions").status == 403

    def test_the_session_expires(
        self, serve: Callable[..., ExampleApp], session_store: Store
    ) -> None:
        example = serve(lifetime=dt.timedelta(seconds=2))
        client = example.client()
        token = issued_token(client.get("/put"))
        assert client.get("/get", cookie=f"session={token}").body.strip() == MESSAGE
        wait_until(lambda: session_store.find(token) is None)
        # The browser would drop the cookie too; send it anyway, as a stale tab would.
        reply = client.get("/get", cookie=f"session={token}")
        assert (reply.status, reply.body.strip()) == (200, "")

    def test_pickled_data_is_never_unpickled(
        self, example: ExampleApp, session_store: Store
    ) -> None:
        token = new_token()
        payload = pickle.dumps({"message": "from a pickle"})
        session_store.commit(token, payload, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        reply = example.client().get("/get", cookie=f"session={token}")
        assert (reply.status, reply.body.strip()) == (200, "")

    @pytest.mark.parametrize("path", ["/put", "/get", "/login", "/logout"])
    def test_a_store_failure_is_a_clean_500(
        self, example: ExampleApp, db: psycopg.Connection[Any], path: str
    ) -> None:
        client = example.client()
        client.get("/put")
        token = client.token()
        assert token is not None
        db.execute("ALTER TABLE sessions RENAME TO sessions_gone")
        reply = client.get(path)
        assert reply.status == 500
        assert "<title>500 Internal Server Error</title>" in reply.body  # Quart's page
        for leak in ("Traceback", "DatabaseError", "psycopg", "sessions", "relation", token):
            assert leak not in reply.body
        assert reply.cookies == []
        assert client.token() == token

    def test_a_failed_save_is_a_clean_500(
        self, example: ExampleApp, db: psycopg.Connection[Any]
    ) -> None:
        db.execute("ALTER TABLE sessions ADD CONSTRAINT no_writes CHECK (false) NOT VALID")
        reply = example.client().get("/put")  # nothing to read: only the write fails
        assert reply.status == 500
        assert "<title>500 Internal Server Error</title>" in reply.body
        assert "Traceback" not in reply.body
        assert reply.cookies == []
