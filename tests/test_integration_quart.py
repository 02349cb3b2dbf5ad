"""The Quart integration, through the example app served by uvicorn over real HTTP.

The app is `sessionstore.examples.quart_app`, the one the demo serves.

Each test runs the example app in a uvicorn server thread on the test's database (its
pool opened and closed by the app's before/after serving hooks) and drives it with
urllib and a cookie jar, then looks at the sessions table directly.
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
import aiohttp
import psycopg
import pytest
import quart
import quart.sessions
import uvicorn
from _example_contract import ExampleAppContract
from _gates import Gates, params
from _gunicorn import UVICORN_WORKER, docs_set_up, gunicorn
from _http import (
    Client,
    check_scs_headers,
    load_example,
    run_uvicorn,
    stop_uvicorn,
)
from _support import table_rows, wait_until
from psycopg_pool import AsyncConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore.cleanup import NoCleanup
from sessionstore.integrations.quart import (
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
from sessionstore.manager import CREATED_KEY, DEVICE_KEY
from sessionstore.testing import TcpProxy

MESSAGE = "Hello from a session!"
USER = "alice"  # whom the example's /login logs in
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass
class App:
    """The example app being served, and what the tests need around it."""

    url: str
    app: quart.Quart
    pool: AsyncConnectionPool[Any]

    def client(self) -> Client:
        return Client(self.url)

    @property
    def store(self) -> AsyncStore:
        return store_of(self.app)


def store_of(app: quart.Quart) -> AsyncStore:
    """The store behind the app's session interface."""
    interface = app.session_interface
    assert isinstance(interface, PostgresSessionInterface)
    return interface.store


@pytest.fixture
def serve(sessionstore_dsn: str) -> Iterator[Callable[..., App]]:
    """Serve the example app (on the test's database, or `dsn`) in a uvicorn thread."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        configure: Callable[[quart.Quart], None] | None = None,
        dsn: str | None = None,
        timeout: float = 30.0,
        **options: Any,
    ) -> App:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn or sessionstore_dsn,
            open=False,
            min_size=1,
            max_size=4,
            timeout=timeout,
            kwargs={"autocommit": True},
        )
        app = load_example("quart_app.py").create_app(pool, **options)
        if configure is not None:
            configure(app)
        server, thread, url = run_uvicorn(app)
        running.append((server, thread))
        return App(url, app, pool)

    yield start
    for server, thread in running:
        stop_uvicorn(server, thread)


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
    def configure(app: quart.Quart) -> None:
        @app.get("/logout-with-flash")
        async def logout_with_flash() -> str:
            quart.session.clear()
            quart.session["flash"] = "Logged out."
            return "ok"

    client = serve(configure).client()
    client.get("/put")
    old = client.token()
    client.get("/logout-with-flash")
    new = client.token()
    assert new is not None
    assert new != old
    assert tokens(db) == [new]
    assert stored(db) == {"flash": "Logged out."}


def test_tagged_json_keeps_quart_types(serve: Callable[..., App]) -> None:
    def configure(app: quart.Quart) -> None:
        @app.get("/types/put")
        async def put_types() -> str:
            quart.session["value"] = (1, b"\x00", dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
            return "ok"

        @app.get("/types/get")
        async def get_types() -> str:
            return repr(quart.session["value"])

    client = serve(configure).client()
    client.get("/types/put")
    assert client.get("/types/get").body == repr(
        (1, b"\x00", dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    )


# --------------------------------------------------------------------------- settings and expiry


def test_cookie_attributes_follow_quart_settings(serve: Callable[..., App]) -> None:
    def configure(app: quart.Quart) -> None:
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
    assert {"secure", "httponly"} <= attributes.keys()
    # Quart 0.21 added SESSION_COOKIE_PARTITIONED; before it the setting is unknown.
    partitioned = hasattr(quart.sessions.SessionInterface, "get_cookie_partitioned")
    assert ("partitioned" in attributes) is partitioned
    assert attributes["samesite"].strip() == "SameSite=Strict"
    expires = dt.datetime.strptime(
        attributes["expires"].strip(), "Expires=%a, %d %b %Y %H:%M:%S GMT"
    ).replace(tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=2) - dt.timedelta(minutes=1) < expires - now <= dt.timedelta(hours=2)
    assert example.client().get("/get", cookie=f"sid={value}").body.strip() == MESSAGE


def test_cookies_are_httponly_lax_and_secure_except_locally(serve: Callable[..., App]) -> None:
    def cookie(host: str) -> str:
        request = urllib.request.Request(f"{url}/put", headers={"Host": host})
        with urllib.request.urlopen(request, timeout=30) as response:
            [header] = response.headers.get_all("Set-Cookie")
            return str(header).lower()

    url = serve().url
    public = {part.strip() for part in cookie("example.com").split(";")}
    assert {"secure", "httponly", "samesite=lax"} <= public
    local = {part.strip() for part in cookie("localhost:8000").split(";")}
    assert {"httponly", "samesite=lax"} <= local
    assert "secure" not in local


def test_a_browser_session_cookie_has_no_expiry_and_the_row_gets_session_only_ttl(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: quart.Quart) -> None:
        app.session_interface = PostgresSessionInterface(  # type: ignore[assignment]
            store_of(app), session_only_ttl=dt.timedelta(minutes=10)
        )

        @app.get("/visit")
        async def visit() -> str:
            quart.session["visits"] = quart.session.get("visits", 0) + 1
            return str(quart.session["visits"])

    client = serve(configure).client()
    [header] = client.get("/visit").cookies
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
    written_meanwhile = json.dumps({"message": "written meanwhile", "_permanent": True}).encode()

    def configure(app: quart.Quart) -> None:
        @app.get("/read-while-another-writes")
        async def read_while_another_writes() -> str:
            message = str(quart.session["message"])  # used: the response saves it
            session = quart.session
            assert isinstance(session, ServerSideSession)
            assert session.token is not None
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
            await store_of(app).commit(session.token, written_meanwhile, soon)
            return message

    client = serve(configure, lifetime=dt.timedelta(minutes=10)).client()
    client.get("/put")
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")  # renewal due
    reply = client.get("/read-while-another-writes")
    assert (reply.status, reply.body) == (200, MESSAGE)
    [(token, data, expiry)] = table_rows(db)
    assert token == client.token()
    assert bytes(data) == written_meanwhile
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=9)
    assert client.get("/get").body.strip() == "written meanwhile"


def test_renewal_of_a_session_deleted_meanwhile_does_not_bring_it_back(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: quart.Quart) -> None:
        @app.get("/read-while-deleted")
        async def read_while_deleted() -> str:
            message = str(quart.session["message"])
            session = quart.session
            assert isinstance(session, ServerSideSession)
            assert session.token is not None
            await store_of(app).delete(session.token)  # "log out everywhere", elsewhere
            return message

    client = serve(configure).client()
    client.get("/put")
    token = client.token()
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")  # renewal due
    reply = client.get("/read-while-deleted")
    assert (reply.status, reply.body) == (200, MESSAGE)
    assert tokens(db) == []
    [header] = reply.cookies
    assert header.startswith("session=;")
    assert reply.header("Cache-Control") == ['no-cache="Set-Cookie"']
    assert client.token() is None
    assert client.get("/get", cookie=f"session={token}").body.strip() == ""
    assert tokens(db) == []


# --------------------------------------------------------------------------- headers


def test_vary_and_cache_control_as_scs_sends_them(serve: Callable[..., App]) -> None:
    def configure(app: quart.Quart) -> None:
        @app.get("/put-cached")
        async def put_cached() -> quart.Response:
            quart.session["cached"] = True  # a change: an unchanged session sets no cookie
            response = quart.Response("ok")
            response.headers.add("Vary", "Accept-Encoding")
            response.headers.add("Vary", "Origin")
            response.headers["Cache-Control"] = "private"
            return response

        @app.get("/put-uncached")
        async def put_uncached() -> tuple[str, dict[str, str]]:
            quart.session["message"] = MESSAGE
            return "ok", {"Cache-Control": "no-store"}

        @app.get("/vary-cookie")
        async def vary_cookie() -> tuple[str, dict[str, str]]:
            return str(quart.session.get("message", "")), {"Vary": "cookie"}

    check_scs_headers(serve(configure).client(), untouched="/")


# --------------------------------------------------------------------------- failures


def test_the_database_down_is_a_500_and_the_session_survives(
    serve: Callable[..., App],
    sessionstore_proxy: TcpProxy,
    sessionstore_proxy_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    def configure(app: quart.Quart) -> None:
        @app.errorhandler(500)
        async def server_error(error: Exception) -> tuple[str, int]:
            return "The app's own error page.\n", 500

    example = serve(configure, dsn=sessionstore_proxy_dsn, timeout=2)  # a connection: 2 s
    client = example.client()
    client.get("/put")
    token = client.token()
    sessionstore_proxy.reset()  # every connection, open or new, is reset
    for path in ("/get", "/logout"):
        reply = client.get(path)
        # Quart's error handling answers: the app's own handler for 500 ran.
        assert (reply.status, reply.body) == (500, "The app's own error page.\n"), path
        assert reply.cookies == []
    # A view that never uses the session is served meanwhile.
    assert client.get("/").status == 200
    sessionstore_proxy.passthrough()  # the database is back
    # The pool reconnects in the background, with backoff: wait for its connection.
    wait_until(lambda: example.pool.get_stats().get("pool_available", 0) > 0, timeout=30)
    assert client.get("/get").body.strip() == MESSAGE
    assert client.token() == token
    assert tokens(db) == [token]


# --------------------------------------------------------------------------- websockets


async def test_a_websocket_saves_a_session_that_keeps_its_token(
    serve: Callable[..., App], db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    def configure(app: quart.Quart) -> None:
        @app.websocket("/ws/visit")
        async def visit() -> None:
            quart.session["visits"] = quart.session.get("visits", 0) + 1
            await quart.websocket.send(str(quart.session["visits"]))

    def visits() -> object:
        return json.loads(bytes(table_rows(db)[0][1])).get("visits")

    example = serve(configure)
    ws_url = example.url.replace("http://", "ws://") + "/ws/visit"
    client = example.client()
    client.get("/put")
    token = client.token()
    async with aiohttp.ClientSession() as http:
        for expected in (1, 2):
            async with http.ws_connect(ws_url, headers={"Cookie": f"session={token}"}) as ws:
                assert await ws.receive_str() == str(expected)
            # Quart saves the session after the handler returned: wait for the row.
            wait_until(lambda: visits() == expected)  # noqa: B023 - called at once
        # Without a cookie there is nowhere to put a new token: nothing is saved.
        async with http.ws_connect(ws_url) as ws:
            assert await ws.receive_str() == "1"
        wait_until(lambda: "not saved after a websocket" in caplog.text)
    assert tokens(db) == [token]
    assert client.get("/get").body.strip() == MESSAGE


# --------------------------------------------------------------------------- sessions per user


def owners(db: psycopg.Connection[Any]) -> dict[str, str | None]:
    return dict(db.execute("SELECT token, owner FROM sessions").fetchall())


async def test_the_helpers(async_session_store: AsyncStore) -> None:
    for helper in (renew_token, session_owner):
        with pytest.raises(RuntimeError, match="during a request"):
            helper()
    with pytest.raises(RuntimeError, match="during a request"):
        login_session("bob")
    with pytest.raises(RuntimeError, match="during a request"):
        signed_in_within(60)
    for coroutine in (user_sessions, logout_everywhere):
        with pytest.raises(RuntimeError, match="during a request"):
            await coroutine()
    with pytest.raises(RuntimeError, match="during a request"):
        await revoke("A" * 22)
    app = quart.Quart(__name__)
    app.secret_key = "test"  # Quart's own cookie sessions
    async with app.test_request_context("/"):
        with pytest.raises(RuntimeError, match="PostgresSessionInterface"):
            renew_token()
    app.session_interface = PostgresSessionInterface(async_session_store)  # type: ignore[assignment]
    async with app.test_request_context("/"):
        with pytest.raises(TypeError, match="str"):
            login_session(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="empty"):
            login_session("")
        assert session_owner() is None
        assert await user_sessions() == []
        assert await logout_everywhere() == 0
        assert await revoke("A" * 22) is False
        assert signed_in_within(60) is False
        login_session("bob")
        assert signed_in_within(dt.timedelta(minutes=1))
        with pytest.raises(ValueError, match="within must be positive"):
            signed_in_within(0)


def test_bad_arguments(session_store: Store, async_session_store: AsyncStore) -> None:
    with pytest.raises(TypeError, match="AsyncStore"):
        PostgresSessionInterface(session_store)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        PostgresSessionInterface(async_session_store, session_only_ttl=0)
    with pytest.raises(TypeError, match="timedelta"):
        PostgresSessionInterface(async_session_store, session_only_ttl="1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_grace must be shorter than idle_timeout"):
        PostgresSessionInterface(async_session_store, rotate_every=60, session_only_ttl=30)


def test_the_rotation_and_device_settings_come_from_the_config(
    async_session_store: AsyncStore,
) -> None:
    """The Flask integration's settings code (tested there), on Quart's config."""
    app = quart.Quart(__name__)
    interface = PostgresSessionInterface(async_session_store, rotate_grace=5, record_devices=True)
    app.config.update(SESSION_ROTATE_EVERY=900, SESSION_RECORD_DEVICES=False)
    manager = interface.manager(app)
    assert (manager.rotate_every, manager.rotate_grace, manager.record_devices) == (
        dt.timedelta(minutes=15),
        dt.timedelta(seconds=5),
        False,
    )
    app.config["SESSION_ROTATE_GRACE"] = "5s"
    with pytest.raises(TypeError, match="rotate_grace must be a timedelta"):
        interface.manager(app)


def test_quart_is_imported_only_by_the_integration() -> None:
    code = (
        "import sys, sessionstore, sessionstore.integrations, sessionstore.cli\n"
        "loaded = [m for m in ('quart', 'hypercorn', 'flask', 'werkzeug') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "sys.modules['quart'] = None\n"
        "try:\n"
        "    import sessionstore.integrations.quart\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert 'pip install "sessionstore[quart]"' in out


# --------------------------------------------------------------------------- the session contract


def contract_app(
    pool: AsyncConnectionPool[Any], store_options: dict[str, Any] | None = None, **config: Any
) -> quart.Quart:
    """An app with the contract's routes (see _session_contract), on `pool`."""
    store = AsyncStore(pool, cleanup=NoCleanup(), **(store_options or {}))
    app = quart.Quart(__name__)
    app.config.update(config)
    app.session_interface = PostgresSessionInterface(store)  # type: ignore[assignment]
    gates = Gates()

    @app.before_serving
    async def open_pool() -> None:
        await pool.open(wait=True)
        await store.create_table()  # the owner column, for a store with owners=True

    @app.after_serving
    async def close_pool() -> None:
        await store.aclose()
        await pool.close()

    @app.get("/c/set")
    async def set_key() -> str:
        key, value, group, n, hold = params(quart.request.args.to_dict())
        await gates.await_(group, n, hold)  # the session was loaded when the request began
        quart.session.permanent = True  # the idle timeout: PERMANENT_SESSION_LIFETIME
        quart.session[key] = value
        return "ok"

    @app.get("/c/get")
    async def get() -> dict[str, Any]:
        return {k: v for k, v in quart.session.items() if not k.startswith("_")}

    @app.get("/c/logout")
    async def logout() -> str:
        quart.session.clear()
        return "ok"

    @app.get("/c/arrived")
    async def arrived() -> str:
        return str(gates.arrived(quart.request.args["group"]))

    @app.get("/c/release")
    async def release() -> str:
        gates.release(quart.request.args["hold"])
        return "ok"

    @app.get("/c/login")
    async def login() -> str:
        login_session(quart.request.args["user"])
        return "ok"

    @app.get("/c/sessions")
    async def sessions() -> quart.Response:
        return quart.jsonify(contract_checks.as_json(await user_sessions()))

    @app.get("/c/revoke")
    async def revoke_one() -> str:
        return json.dumps(await revoke(quart.request.args["id"]))

    @app.get("/c/fresh")
    async def fresh() -> str:
        return json.dumps(signed_in_within(float(quart.request.args["within"])))

    return app


@pytest.fixture
def contract(sessionstore_dsn: str) -> Iterator[Callable[..., contract_checks.Served]]:
    """Serve the contract app with these ``app.config`` settings, in a uvicorn thread."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(store_options: dict[str, Any] | None = None, **config: Any) -> contract_checks.Served:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            sessionstore_dsn, open=False, min_size=1, max_size=4, kwargs={"autocommit": True}
        )
        server, thread, url = run_uvicorn(contract_app(pool, store_options, **config))
        running.append((server, thread))
        return contract_checks.Served(url, "session")

    yield start
    for server, thread in running:
        stop_uvicorn(server, thread)


@pytest.mark.parametrize("check", contract_checks.PER_USER_CHECKS)
def test_sessions_per_user(
    contract: Callable[..., contract_checks.Served],
    check: Callable[[contract_checks.Served], None],
) -> None:
    """The per-user checks (see _session_contract), on a capped store."""
    app = contract(
        {"owners": True, "max_sessions_per_owner": contract_checks.CAP},
        PERMANENT_SESSION_LIFETIME=60,
        SESSION_ROTATE_EVERY=contract_checks.ROTATE_EVERY,
        SESSION_ROTATE_GRACE=contract_checks.ROTATE_GRACE,
        SESSION_RECORD_DEVICES=True,
    )
    check(app)


def test_devices_are_not_recorded_by_default(
    contract: Callable[..., contract_checks.Served], db: psycopg.Connection[Any]
) -> None:
    contract_checks.check_devices_are_not_recorded_by_default(contract({"owners": True}), db)


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


# --------------------------------------------------------------------------- deployment


@pytest.mark.parametrize("source", ["example", "docs"])
def test_the_example_app_under_gunicorn_preload(
    sessionstore_dsn: str, tmp_path: Path, source: str
) -> None:
    """``module:app`` loaded before the fork, served by uvicorn's worker class.

    The example app, and the docs' set-up as written.
    """
    worker = ("-k", UVICORN_WORKER)
    options: tuple[str, ...]
    if source == "example":
        options = (*worker, "sessionstore.examples.quart_app:app")
    else:
        module = docs_set_up("integrations-quart.md", tmp_path)
        options = (*worker, "--chdir", str(tmp_path), f"{module}:app")
    with gunicorn(sessionstore_dsn, tmp_path / "gunicorn.log", *options) as url:
        for _ in range(2):  # a session per worker, most likely
            client = Client(url)
            assert client.get("/put").status == 200
            got = client.get("/get")
            assert (got.status, got.body.strip()) == (200, MESSAGE)
