"""The Flask integration, through the example app served by werkzeug over real HTTP.

The app is `sessionstore.examples.flask_app`, the one the demo serves.

Each test runs the example app in a werkzeug server thread on the test's database and
drives it with urllib and a cookie jar, then looks at the sessions table directly.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _session_contract as contract_checks
import flask
import flask_login
import psycopg
import pytest
from _example_contract import ExampleAppContract
from _gates import Gates, params
from _gunicorn import docs_set_up, gunicorn
from _http import Client, check_scs_headers, listed, load_example
from _support import new_token, table_rows
from psycopg_pool import ConnectionPool
from werkzeug.serving import BaseWSGIServer, make_server

from sessionstore import OwnersNotEnabledError, Store
from sessionstore._core import hash_token
from sessionstore.cleanup import NoCleanup
from sessionstore.integrations.flask import (
    PostgresSessionInterface,
    ServerSideSession,
    login_session,
    logout_everywhere,
    renew_token,
    revoke,
    session_owner,
    signed_in_within,
    user_sessions,
)
from sessionstore.manager import CREATED_KEY, DEVICE_KEY, session_id

MESSAGE = "Hello from a session!"
USER = "alice"  # whom the example's /login logs in
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass
class App:
    """The example app being served, and what the tests need around it."""

    url: str
    app: flask.Flask
    store: Store

    def client(self) -> Client:
        return Client(self.url)


@pytest.fixture
def owners_store(sessionstore_dsn: str) -> Iterator[Store]:
    """A `Store` with ``owners=True`` on the test's database, as the example needs."""
    with (
        ConnectionPool(
            sessionstore_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}
        ) as pool,
        Store(pool, owners=True, cleanup=NoCleanup()) as store,
    ):
        store.create_table()  # adds the owner column to the test database's table
        yield store


@pytest.fixture
def serve(owners_store: Store) -> Iterator[Callable[..., App]]:
    """Serve the example app (on the test's store) in a werkzeug thread."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(
        configure: Callable[[flask.Flask], None] | None = None,
        store: Store | None = None,
        **options: Any,
    ) -> App:
        store = owners_store if store is None else store
        app = load_example("flask_app.py").create_app(store, **options)
        if configure is not None:
            configure(app)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="test-werkzeug")
        thread.start()
        servers.append((server, thread))
        return App(f"http://127.0.0.1:{server.port}", app, store)

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture
def example(serve: Callable[..., App]) -> App:
    return serve()


def tokens(db: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in table_rows(db)]


def stored(db: psycopg.Connection[Any]) -> dict[str, Any]:
    """The one session's stored data, without the time its lifetime began and its device."""
    [(_, data, _)] = table_rows(db)
    decoded: dict[str, Any] = json.loads(bytes(data))
    assert isinstance(decoded.pop(CREATED_KEY), float)
    assert decoded.pop(DEVICE_KEY)["ip"] == "127.0.0.1"  # the example records devices
    return decoded


# --------------------------------------------------------------------------- the Go example


class TestExampleApp(ExampleAppContract):
    """The routes both example apps share (see _example_contract), on this one."""


def test_clear_then_store_again_kills_the_old_token(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: flask.Flask) -> None:
        @app.get("/logout-with-flash")
        def logout_with_flash() -> str:
            flask.session.clear()
            flask.session["flash"] = "Logged out."
            return "ok"

    example = serve(configure)
    client = example.client()
    client.get("/put")
    old = client.token()
    client.get("/logout-with-flash")
    new = client.token()
    assert new is not None
    assert new != old
    assert tokens(db) == [new]
    assert stored(db) == {"flash": "Logged out."}


def test_cookie_attributes_follow_flask_settings(serve: Callable[..., App]) -> None:
    def configure(app: flask.Flask) -> None:
        app.config.update(
            SESSION_COOKIE_NAME="sid",
            SESSION_COOKIE_DOMAIN="example.test",
            SESSION_COOKIE_PATH="/app",
            SESSION_COOKIE_SECURE=True,
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Strict",
            SESSION_COOKIE_PARTITIONED=True,
        )

    example = serve(configure, lifetime=dt.timedelta(hours=2))
    reply = example.client().get("/put")
    [header] = reply.cookies
    name, value = header.split(";", 1)[0].split("=", 1)
    assert name == "sid"
    assert TOKEN_RE.fullmatch(value)
    attributes = {part.strip().split("=", 1)[0].lower(): part for part in header.split(";")[1:]}
    assert attributes["domain"].strip() == "Domain=example.test"
    assert attributes["path"].strip() == "Path=/app"
    assert {"secure", "httponly", "partitioned"} <= attributes.keys()
    assert attributes["samesite"].strip() == "SameSite=Strict"
    expires = dt.datetime.strptime(
        attributes["expires"].strip(), "Expires=%a, %d %b %Y %H:%M:%S GMT"
    ).replace(tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=2) - dt.timedelta(minutes=1) < expires - now <= dt.timedelta(hours=2)
    # The cookie's name is the one read back.
    got = example.client().get("/get", cookie=f"sid={value}")
    assert got.body.strip() == MESSAGE


def test_the_cookie_expires_with_the_row_never_past_the_lifetime(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: flask.Flask) -> None:
        app.config["SESSION_ABSOLUTE_LIFETIME"] = dt.timedelta(minutes=10)

    client = serve(configure, lifetime=dt.timedelta(hours=1)).client()  # idle: 1 h
    [header] = client.get("/put").cookies
    [expires] = [p.strip() for p in header.split(";") if p.strip().startswith("Expires=")]
    cookie = dt.datetime.strptime(expires, "Expires=%a, %d %b %Y %H:%M:%S GMT")
    [(_, _, expiry)] = table_rows(db)
    assert cookie.replace(tzinfo=dt.UTC) == expiry.replace(microsecond=0)
    assert expiry - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=10)


def store_of(app: flask.Flask) -> Store:
    """The store behind the app's session interface."""
    interface = app.session_interface
    assert isinstance(interface, PostgresSessionInterface)
    return interface.store


def test_a_browser_session_cookie_has_no_expiry_and_the_row_gets_session_only_ttl(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: flask.Flask) -> None:
        app.session_interface = PostgresSessionInterface(
            store_of(app),
            session_only_ttl=dt.timedelta(minutes=10),
        )

        @app.get("/visit")
        def visit() -> str:
            flask.session["visits"] = flask.session.get("visits", 0) + 1
            return str(flask.session["visits"])

    example = serve(configure)
    client = example.client()
    reply = client.get("/visit")
    [header] = reply.cookies
    assert "expires" not in header.lower()
    assert "max-age" not in header.lower()
    [(_, _, expiry)] = table_rows(db)
    left = expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=9) < left <= dt.timedelta(minutes=10)
    assert client.get("/visit").body == "2"
    assert stored(db) == {"visits": 2}


def test_renewal_touches_and_keeps_what_another_request_wrote_meanwhile(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    """A read-only request whose renewal is due moves the expiry and leaves the data alone.

    Between this request's read and its save, "another request" commits new data for
    the session. Rewriting the payload to slide the expiry would put back the copy
    this request read; a touch moves only the expiry.
    """
    written_meanwhile = json.dumps({"message": "written meanwhile", "_permanent": True}).encode()

    def configure(app: flask.Flask) -> None:
        @app.get("/read-while-another-writes")
        def read_while_another_writes() -> str:
            message = str(flask.session["message"])  # loaded: the response saves it
            session = flask.session
            assert isinstance(session, ServerSideSession)
            assert session.token is not None
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
            store_of(app).commit(session.token, written_meanwhile, soon)
            return message

    example = serve(configure, lifetime=dt.timedelta(minutes=10))
    client = example.client()
    client.get("/put")
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")  # renewal due
    reply = client.get("/read-while-another-writes")
    assert (reply.status, reply.body) == (200, MESSAGE)
    [(token, data, expiry)] = table_rows(db)
    assert token == client.token()
    assert bytes(data) == written_meanwhile
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=9)
    assert client.get("/get").body.strip() == "written meanwhile"


def test_renewal_does_not_reserialise_the_data(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    # The row holds the session in a JSON layout the serializer never writes: a
    # rewrite would change its bytes, a touch does not.
    example = serve(lifetime=dt.timedelta(minutes=10))
    client = example.client()
    client.get("/put")
    layout = json.dumps({"message": MESSAGE, "_permanent": True}, indent=2).encode()
    db.execute("UPDATE sessions SET data = %s, expiry = now() + interval '1 minute'", (layout,))
    assert client.get("/get").body.strip() == MESSAGE
    [(_, data, expiry)] = table_rows(db)
    assert bytes(data) == layout
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=9)


def test_renewal_of_a_session_deleted_meanwhile_does_not_bring_it_back(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: flask.Flask) -> None:
        @app.get("/read-while-deleted")
        def read_while_deleted() -> str:
            message = str(flask.session["message"])
            session = flask.session
            assert isinstance(session, ServerSideSession)
            assert session.token is not None
            # What "log out everywhere" on another device does meanwhile.
            store_of(app).delete(session.token)
            return message

    example = serve(configure)
    client = example.client()
    client.get("/put")
    token = client.token()
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")  # renewal due
    reply = client.get("/read-while-deleted")
    assert (reply.status, reply.body) == (200, MESSAGE)
    assert tokens(db) == []
    [header] = reply.cookies
    assert header.startswith("session=;")
    assert "Expires=Thu, 01 Jan 1970" in header
    assert reply.header("Cache-Control") == ['no-cache="Set-Cookie"']
    assert client.token() is None
    assert client.get("/get", cookie=f"session={token}").body.strip() == ""
    assert tokens(db) == []


def test_tagged_json_keeps_flask_types(serve: Callable[..., App]) -> None:
    def configure(app: flask.Flask) -> None:
        @app.get("/types/put")
        def put_types() -> str:
            flask.session["value"] = (1, b"\x00", dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
            return "ok"

        @app.get("/types/get")
        def get_types() -> str:
            return repr(flask.session["value"])

    example = serve(configure)
    client = example.client()
    client.get("/types/put")
    expected = repr((1, b"\x00", dt.datetime(2024, 1, 2, tzinfo=dt.UTC)))
    assert client.get("/types/get").body == expected


def test_the_session_mapping(session_store: Store) -> None:
    app = flask.Flask(__name__)
    app.session_interface = PostgresSessionInterface(session_store)
    with app.test_request_context("/"):
        session = flask.session
        assert isinstance(session, ServerSideSession)
        assert not session.loaded
        assert session.new
        session["a"] = 1
        session.setdefault("b", 2)
        assert dict(session) == {"a": 1, "b": 2}
        assert "a" in session
        assert len(session) == 2
        assert session.pop("a") == 1
        assert session.modified
        assert session.loaded
        assert repr(session) == "<ServerSideSession {'b': 2}>"


# --------------------------------------------------------------------------- headers


def test_vary_and_cache_control_as_scs_sends_them(serve: Callable[..., App]) -> None:
    def configure(app: flask.Flask) -> None:
        @app.get("/put-cached")
        def put_cached() -> flask.Response:
            flask.session["cached"] = True  # a change: an unchanged session sets no cookie
            response = flask.make_response("ok")
            response.headers.add("Vary", "Accept-Encoding")
            response.headers.add("Vary", "Origin")  # a second Vary header is kept too
            response.headers["Cache-Control"] = "private"
            return response

        @app.get("/put-uncached")
        def put_uncached() -> tuple[str, dict[str, str]]:
            flask.session["message"] = MESSAGE
            return "ok", {"Cache-Control": "no-store"}

        @app.get("/vary-cookie")
        def vary_cookie() -> tuple[str, dict[str, str]]:
            return str(flask.session.get("message", "")), {"Vary": "cookie"}

    example = serve(configure)
    client = example.client()
    check_scs_headers(client, untouched="/")


# --------------------------------------------------------------------------- sessions per user


def owners(db: psycopg.Connection[Any]) -> dict[str, str | None]:
    return dict(db.execute("SELECT token, owner FROM sessions").fetchall())


def test_with_hashed_tokens_the_listing_marks_the_current_session(
    serve: Callable[..., App], sessionstore_dsn: str
) -> None:
    # The serve fixture's store has added the owner column already.
    with (
        ConnectionPool(
            sessionstore_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}
        ) as pool,
        Store(pool, owners=True, hash_tokens=True, cleanup=NoCleanup()) as hashed,
    ):
        example = serve(store=hashed)
        laptop, phone = example.client(), example.client()
        for device in (laptop, phone):
            device.get("/login")
        for device in (laptop, phone):
            token = device.token()
            assert token is not None
            lines = listed(device.get("/sessions"))
            assert len(lines) == 2
            [this] = [line for line in lines if "(this one)" in line]
            assert this.split()[0] == session_id(hash_token(token))  # of the stored key
        assert "Logged out 1 other" in laptop.get("/logout-everywhere").body
        assert phone.get("/sessions").status == 403
        assert len(listed(laptop.get("/sessions"))) == 1


def test_the_helpers(owners_store: Store, session_store: Store) -> None:
    app = flask.Flask(__name__)
    app.session_interface = PostgresSessionInterface(owners_store)
    with app.test_request_context("/"):
        assert session_owner() is None
        assert user_sessions() == []
        assert logout_everywhere() == 0
        assert revoke("A" * 22) is False
        assert signed_in_within(60) is False
        with pytest.raises(TypeError, match="str"):
            login_session(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="empty"):
            login_session("")
        login_session("bob")
        assert session_owner() == "bob"
        assert signed_in_within(dt.timedelta(minutes=1))
        with pytest.raises(ValueError, match="within must be positive"):
            signed_in_within(0)
        assert flask.session.modified
    plain = flask.Flask(__name__)
    plain.session_interface = PostgresSessionInterface(session_store)
    token = new_token()
    data = json.dumps({"_session_owner": "bob"}).encode()
    session_store.commit(token, data, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    with plain.test_request_context("/", headers={"Cookie": f"session={token}"}):
        assert session_owner() == "bob"
        with pytest.raises(OwnersNotEnabledError):
            user_sessions()
    # Helpers called before anything loaded the session know which one is current.
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    mine, other = new_token(), new_token()
    for each in (mine, other):
        owners_store.commit(each, data, expiry, owner="bob")
    with app.test_request_context("/", headers={"Cookie": f"session={mine}"}):
        assert sorted(each.current for each in user_sessions()) == [False, True]
    with app.test_request_context("/", headers={"Cookie": f"session={mine}"}):
        assert logout_everywhere() == 1
    assert owners_store.find(mine) is not None
    assert owners_store.find(other) is None
    for helper in (session_owner, user_sessions, logout_everywhere):
        with pytest.raises(RuntimeError, match="during a request"):
            helper()
    with pytest.raises(RuntimeError, match="during a request"):
        revoke("A" * 22)
    with pytest.raises(RuntimeError, match="during a request"):
        signed_in_within(60)


def test_renew_token_outside_a_request_or_with_another_interface() -> None:
    with pytest.raises(RuntimeError, match="during a request"):
        renew_token()
    app = flask.Flask(__name__)
    app.secret_key = "test"
    with app.test_request_context("/"), pytest.raises(RuntimeError, match="PostgresSession"):
        renew_token()


def test_bad_arguments(session_store: Store, async_session_store: Any) -> None:
    with pytest.raises(TypeError, match="AsyncStore"):
        PostgresSessionInterface(async_session_store)
    with pytest.raises(ValueError, match="positive"):
        PostgresSessionInterface(session_store, session_only_ttl=0)
    with pytest.raises(TypeError, match="timedelta"):
        PostgresSessionInterface(session_store, session_only_ttl="1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_every must be positive"):
        PostgresSessionInterface(session_store, rotate_every=0)
    with pytest.raises(TypeError, match="rotate_grace must be a timedelta"):
        PostgresSessionInterface(session_store, rotate_every=60, rotate_grace="30")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_grace must be shorter than idle_timeout"):
        PostgresSessionInterface(session_store, rotate_every=60, session_only_ttl=30)


def test_the_rotation_and_device_settings_come_from_the_config(session_store: Store) -> None:
    app = flask.Flask(__name__)
    interface = PostgresSessionInterface(session_store, rotate_every=600)
    manager = interface.manager(app)
    assert (manager.rotate_every, manager.rotate_grace) == (
        dt.timedelta(minutes=10),
        dt.timedelta(seconds=30),
    )
    assert manager.record_devices is False  # off by default: personal data
    app.config.update(
        SESSION_ROTATE_EVERY=dt.timedelta(minutes=15),
        SESSION_ROTATE_GRACE=10,
        SESSION_RECORD_DEVICES=True,
    )
    manager = interface.manager(app)
    assert (manager.rotate_every, manager.rotate_grace, manager.record_devices) == (
        dt.timedelta(minutes=15),
        dt.timedelta(seconds=10),
        True,
    )
    for setting, value, error in (
        ("SESSION_ROTATE_EVERY", -1, ValueError),
        ("SESSION_ROTATE_EVERY", "15m", TypeError),
        ("SESSION_ROTATE_GRACE", dt.timedelta(days=31), ValueError),  # not under the idle timeout
    ):
        app.config[setting], before = value, app.config[setting]
        with pytest.raises(error, match=setting.removeprefix("SESSION_").lower()):
            interface.manager(app)
        app.config[setting] = before


def test_flask_is_imported_only_by_the_integration() -> None:
    code = (
        "import sys, sessionstore, sessionstore.integrations, sessionstore.cli\n"
        "loaded = [m for m in ('flask', 'werkzeug', 'starlette', 'starsessions', 'uvicorn')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "sys.modules['flask'] = None\n"
        "try:\n"
        "    import sessionstore.integrations.flask\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert 'pip install "sessionstore[flask]"' in out


# --------------------------------------------------------------------------- the session contract


def contract_app(store: Store, **config: Any) -> flask.Flask:
    """An app with the contract's routes (see _session_contract), on `store`."""
    app = flask.Flask(__name__)
    app.config.update(config)
    app.session_interface = PostgresSessionInterface(store)
    gates = Gates()

    @app.get("/c/set")
    def set_key() -> str:
        key, value, group, n, hold = params(flask.request.args.to_dict())
        len(flask.session)  # loaded before the gate
        gates.wait(group, n, hold)
        flask.session.permanent = True  # the idle timeout: PERMANENT_SESSION_LIFETIME
        flask.session[key] = value
        return "ok"

    @app.get("/c/get")
    def get() -> flask.Response:
        return flask.jsonify({k: v for k, v in flask.session.items() if not k.startswith("_")})

    @app.get("/c/logout")
    def logout() -> str:
        flask.session.clear()
        return "ok"

    @app.get("/c/arrived")
    def arrived() -> str:
        return str(gates.arrived(flask.request.args["group"]))

    @app.get("/c/release")
    def release() -> str:
        gates.release(flask.request.args["hold"])
        return "ok"

    @app.get("/c/login")
    def login() -> str:
        login_session(flask.request.args["user"])
        return "ok"

    @app.get("/c/sessions")
    def sessions() -> flask.Response:
        return flask.jsonify(contract_checks.as_json(user_sessions()))

    @app.get("/c/revoke")
    def revoke_one() -> str:
        return json.dumps(revoke(flask.request.args["id"]))

    @app.get("/c/fresh")
    def fresh() -> str:
        return json.dumps(signed_in_within(float(flask.request.args["within"])))

    return app


@pytest.fixture
def wsgi() -> Iterator[Callable[[flask.Flask], str]]:
    """Serve any Flask app in a werkzeug thread; its URL."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(app: flask.Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="test-werkzeug")
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture
def contract(
    wsgi: Callable[[flask.Flask], str], owners_store: Store
) -> Callable[..., contract_checks.Served]:
    """Serve the contract app with these ``app.config`` settings."""
    return lambda **config: contract_checks.Served(
        wsgi(contract_app(owners_store, **config)), "session"
    )


@pytest.fixture
def per_user(
    wsgi: Callable[[flask.Flask], str], sessionstore_dsn: str
) -> Iterator[contract_checks.Served]:
    """The contract app for the per-user checks (see _session_contract), capped store."""
    with (
        ConnectionPool(
            sessionstore_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}
        ) as pool,
        Store(
            pool,
            owners=True,
            max_sessions_per_owner=contract_checks.CAP,
            cleanup=NoCleanup(),
        ) as store,
    ):
        store.create_table()
        app = contract_app(
            store,
            PERMANENT_SESSION_LIFETIME=60,
            SESSION_ROTATE_EVERY=contract_checks.ROTATE_EVERY,
            SESSION_ROTATE_GRACE=contract_checks.ROTATE_GRACE,
            SESSION_RECORD_DEVICES=True,
        )
        yield contract_checks.Served(wsgi(app), "session")


@pytest.mark.parametrize("check", contract_checks.PER_USER_CHECKS)
def test_sessions_per_user(
    per_user: contract_checks.Served, check: Callable[[contract_checks.Served], None]
) -> None:
    check(per_user)


def test_devices_are_not_recorded_by_default(
    contract: Callable[..., contract_checks.Served], db: psycopg.Connection[Any]
) -> None:
    contract_checks.check_devices_are_not_recorded_by_default(contract(), db)


@pytest.mark.parametrize("count", [2, 4])
def test_overlapping_requests_keep_every_key(
    contract: Callable[..., contract_checks.Served], count: int
) -> None:
    contract_checks.check_overlapping_requests_keep_every_key(contract(), count)


def test_many_sessions_lose_no_key(contract: Callable[..., contract_checks.Served]) -> None:
    contract_checks.check_many_sessions_lose_no_key(contract())


def test_a_logout_racing_a_slower_request_stays_logged_out(
    contract: Callable[..., contract_checks.Served], db: psycopg.Connection[Any]
) -> None:
    contract_checks.check_a_logout_racing_a_slower_request_stays_logged_out(contract(), db)


def test_a_read_only_request_writes_nothing(
    contract: Callable[..., contract_checks.Served], db: psycopg.Connection[Any]
) -> None:
    contract_checks.check_a_read_only_request_writes_nothing(contract(), db)


def test_the_idle_timeout_ends_a_session(contract: Callable[..., contract_checks.Served]) -> None:
    app = contract(PERMANENT_SESSION_LIFETIME=2)
    contract_checks.check_the_idle_timeout_ends_a_session(app, idle=2)


def test_the_lifetime_ends_a_busy_session(contract: Callable[..., contract_checks.Served]) -> None:
    app = contract(PERMANENT_SESSION_LIFETIME=3, SESSION_ABSOLUTE_LIFETIME=7, SESSION_RENEW_AFTER=0)
    contract_checks.check_the_lifetime_ends_a_busy_session(app, idle=3, lifetime=7)


def test_flask_login_gives_a_new_token_at_login(
    contract: Callable[..., contract_checks.Served],
    wsgi: Callable[[flask.Flask], str],
    owners_store: Store,
    db: psycopg.Connection[Any],
) -> None:
    """A token planted before ``login_user`` (session fixation) is dead after it."""

    class User:
        is_active = is_authenticated = True
        is_anonymous = False

        def __init__(self, user_id: str) -> None:
            self.id = user_id

        def get_id(self) -> str:
            return self.id

    app = contract_app(owners_store)
    login_manager = flask_login.LoginManager(app)
    login_manager.user_loader(User)

    @app.get("/flask-login")
    def log_in() -> str:
        flask_login.login_user(User("alice"))
        return "ok"

    @app.get("/flask-logout")
    def log_out() -> str:
        flask_login.logout_user()
        return "ok"

    served = contract_checks.Served(wsgi(app), "session")
    planted = served.start()  # a live session the attacker made, in the victim's browser
    reply = served.get("/flask-login", planted)
    assert reply.status == 200
    fresh = contract_checks.cookie_value(reply, "session")
    assert fresh
    assert fresh != planted
    assert tokens(db) == [fresh]
    assert served.data(planted) == {}
    assert served.data(fresh) == {"start": "1"}
    # login_user is login_session for its user id: owned, and signed in now.
    assert owners(db) == {fresh: "alice"}
    assert served.get("/c/fresh?within=60", fresh).body == "true"
    [listed_session] = contract_checks.listing(served, fresh)
    assert listed_session["current"]
    # logout_user keeps the other keys, under a new token nobody owns.
    reply = served.get("/flask-logout", fresh)
    after = contract_checks.cookie_value(reply, "session")
    assert after
    assert after != fresh
    assert owners(db) == {after: None}
    assert served.data(after) == {"start": "1"}
    assert served.get("/c/fresh?within=60", after).body == "false"


def test_cookies_are_httponly_lax_and_secure_except_locally(
    wsgi: Callable[[flask.Flask], str], session_store: Store
) -> None:
    def cookie(url: str, host: str) -> str:
        request = urllib.request.Request(f"{url}/c/set?key=k&value=v", headers={"Host": host})
        with urllib.request.urlopen(request, timeout=30) as response:
            [header] = response.headers.get_all("Set-Cookie")
            return str(header).lower()

    url = wsgi(contract_app(session_store))
    public = {part.strip() for part in cookie(url, "example.com").split(";")}
    assert {"secure", "httponly", "samesite=lax"} <= public
    local = {part.strip() for part in cookie(url, "localhost:8000").split(";")}
    assert {"httponly", "samesite=lax"} <= local
    assert "secure" not in local
    # An app served over plain HTTP turns the default off.
    app = contract_app(session_store)
    app.session_interface = PostgresSessionInterface(session_store, secure=False, samesite=None)
    plain = cookie(wsgi(app), "example.com")
    assert "secure" not in plain
    assert "samesite" not in plain


# --------------------------------------------------------------------------- deployment


@pytest.mark.parametrize("source", ["example", "docs"])
def test_the_example_app_under_gunicorn_preload(
    owners_store: Store, sessionstore_dsn: str, tmp_path: Path, source: str
) -> None:
    """``module:app`` loaded before the fork: each worker opens its pool, none fails.

    The example app under gthread workers, and the docs' set-up as written under sync
    workers.
    """
    options: tuple[str, ...]
    if source == "example":
        options = ("-k", "gthread", "--threads", "4", "sessionstore.examples.flask_app:app")
    else:
        module = docs_set_up("integrations-flask.md", tmp_path)
        options = ("-k", "sync", "--chdir", str(tmp_path), f"{module}:app")
    with gunicorn(sessionstore_dsn, tmp_path / "gunicorn.log", *options) as url:
        for _ in range(2):  # a session per worker, most likely
            client = Client(url)
            assert client.get("/put").status == 200
            got = client.get("/get")
            assert (got.status, got.body.strip()) == (200, MESSAGE)
