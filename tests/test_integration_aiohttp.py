"""The aiohttp integration over real HTTP: the example app, the session contract, gunicorn.

The app is `sessionstore.examples.aiohttp_app`, the one the demo serves. Most tests run
it with aiohttp's ``AppRunner`` and a ``TCPSite`` on loopback in the test's event
loop and drive it with aiohttp's client; the session contract's checks (blocking
clients in threads) run against it served in a thread of its own; the docs' set-up
snippets and the example's ``module:app`` run under ``gunicorn --preload`` with
aiohttp's worker. Each test looks at the sessions table directly.
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
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _session_contract as contract
import aiohttp
import psycopg
import pytest
from _docs import ROOT, blocks_of
from _gates import Gates, params
from _http import Client as HttpClient
from _support import new_token, table_rows
from aiohttp import web
from aiohttp_session import get_session, new_session

from sessionstore import AsyncStore
from sessionstore._core import hash_token
from sessionstore.examples.aiohttp_app import STORAGE, create_app
from sessionstore.integrations.aiohttp import (
    PostgresStorage,
    login_session,
    postgres_context,
    renew_token,
    revoke,
    session_owner,
    signed_in_within,
    user_sessions,
)
from sessionstore.manager import session_id
from sessionstore.testing import TcpProxy

MESSAGE = "Hello from a session!"
USER = "alice"
COOKIE = "AIOHTTP_SESSION"
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass
class Reply:
    status: int
    body: str
    cookies: list[str]  # the raw Set-Cookie headers
    headers: Any


class Client:
    """A browser stand-in: aiohttp's client with its own cookie jar."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of 127.0.0.1
        self.http = aiohttp.ClientSession(cookie_jar=self.jar)

    async def get(self, path: str, cookie: str | None = None) -> Reply:
        """GET with the jar's cookies, or with exactly `cookie` as the Cookie header."""
        if cookie is None:
            response = await self.http.get(self.base + path)
        else:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as bare:
                response = await bare.get(self.base + path, headers={"Cookie": cookie})
                return await reply_of(response)
        return await reply_of(response)

    def token(self) -> str | None:
        values = [c.value for c in self.jar if c.key == COOKIE]
        return values[0] if values else None


async def reply_of(response: aiohttp.ClientResponse) -> Reply:
    async with response:
        body = await response.text()
        return Reply(
            response.status, body, response.headers.getall("Set-Cookie", []), response.headers
        )


def issued(reply: Reply) -> str:
    [header] = reply.cookies
    return header.split(";", 1)[0].split("=", 1)[1]


def listed(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.body
    return [line for line in reply.body.splitlines() if "expires" in line]


@dataclass
class App:
    url: str
    app: web.Application
    clients: list[Client]

    def client(self) -> Client:
        client = Client(self.url)
        self.clients.append(client)
        return client


@pytest.fixture
async def serve(sessionstore_dsn: str) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    """Serve the example app (on the test's database, or `dsn`) with AppRunner/TCPSite."""
    runners: list[web.AppRunner] = []
    apps: list[App] = []

    async def start(
        configure: Callable[[web.Application], None] | None = None,
        dsn: str | None = None,
        **options: Any,
    ) -> App:
        app = create_app(dsn or sessionstore_dsn, **options)
        if configure is not None:
            configure(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        [sock] = [s for s in runner.addresses]
        served = App(f"http://127.0.0.1:{sock[1]}", app, [])
        apps.append(served)
        return served

    yield start
    for served in apps:
        for client in served.clients:
            await client.http.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def example(serve: Callable[..., Awaitable[App]]) -> App:
    return await serve()


def tokens(db: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in table_rows(db)]


# --------------------------------------------------------------------------- the Go example


async def test_put_then_get(example: App, db: psycopg.Connection[Any]) -> None:
    client = example.client()
    assert (await client.get("/put")).status == 200
    got = await client.get("/get")
    assert (got.status, got.body.strip()) == (200, MESSAGE)
    token = client.token()
    assert token is not None
    assert TOKEN_RE.fullmatch(token)
    [(key, data, _)] = table_rows(db)
    assert key == token
    assert json.loads(bytes(data))["session"] == {"message": MESSAGE}  # aiohttp-session's layout


async def test_a_second_client_does_not_see_the_first_ones_data(
    example: App, db: psycopg.Connection[Any]
) -> None:
    first, second = example.client(), example.client()
    await first.get("/put")
    assert (await second.get("/get")).body.strip() == ""
    await second.get("/put")
    first_token, second_token = first.token(), second.token()
    assert first_token is not None
    assert second_token is not None
    assert first_token != second_token
    assert sorted(tokens(db)) == sorted([first_token, second_token])


async def test_nothing_is_stored_for_a_visitor_who_stores_nothing(
    example: App, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    for path in ("/", "/get", "/no-such-page", "/logout"):
        assert (await client.get(path)).cookies == []
    assert tokens(db) == []


async def test_the_session_expires(example: App, db: psycopg.Connection[Any]) -> None:
    client = example.client()
    token = issued(await client.get("/put"))
    db.execute("UPDATE sessions SET expiry = now() - interval '1 second'")
    reply = await client.get("/get", cookie=f"{COOKIE}={token}")
    assert (reply.status, reply.body.strip()) == (200, "")
    fresh = issued(await client.get("/put", cookie=f"{COOKIE}={token}"))
    assert fresh != token
    assert db.execute("SELECT token FROM sessions WHERE expiry > now()").fetchall() == [(fresh,)]


async def test_the_cookie_and_the_row_last_the_lifetime(
    serve: Callable[..., Awaitable[App]], db: psycopg.Connection[Any]
) -> None:
    example = await serve(idle_timeout=dt.timedelta(minutes=10))
    [header] = (await example.client().get("/put")).cookies
    max_age = re.search(r"Max-Age=(\d+)", header)
    assert max_age is not None
    assert 590 <= int(max_age[1]) <= 600  # whole seconds, never past the row's expiry
    [(_, _, expiry)] = table_rows(db)
    left = expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=9) < left <= dt.timedelta(minutes=10)


async def test_renew_on_login_keeps_the_data_and_kills_the_old_token(
    example: App, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    await client.get("/put")
    old = client.token()
    assert (await client.get("/login")).status == 200
    new = client.token()
    assert new is not None
    assert old is not None
    assert new != old
    assert tokens(db) == [new]
    assert (await client.get("/get")).body.strip() == MESSAGE
    assert (await client.get("/get", cookie=f"{COOKIE}={old}")).body.strip() == ""


async def test_new_session_deletes_the_old_row_at_once(
    serve: Callable[..., Awaitable[App]], db: psycopg.Connection[Any]
) -> None:
    seen: list[list[str]] = []

    def configure(app: web.Application) -> None:
        async def fresh(request: web.Request) -> web.Response:
            await get_session(request)
            await new_session(request)  # aiohttp-session's own call
            seen.append(tokens(db))  # before the response is saved
            return web.Response(text="ok")

        app.router.add_get("/fresh", fresh)

    example = await serve(configure)
    client = example.client()
    await client.get("/put")
    reply = await client.get("/fresh")
    assert reply.status == 200
    assert seen == [[]]
    assert tokens(db) == []


async def test_logout_deletes_the_row_and_the_cookie(
    example: App, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    await client.get("/put")
    token = client.token()
    reply = await client.get("/logout")
    assert reply.status == 200
    assert tokens(db) == []
    [header] = reply.cookies
    assert header.startswith(f'{COOKIE}="";') or header.startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in header
    assert client.token() is None
    assert (await client.get("/get", cookie=f"{COOKIE}={token}")).body.strip() == ""


@pytest.mark.parametrize("value", ["garbage", "x" * 5000, '"quoted"', "A" * 42 + "!", "0" * 32])
async def test_a_tampered_cookie_is_a_new_session(
    example: App, db: psycopg.Connection[Any], value: str
) -> None:
    client = example.client()
    got = await client.get("/get", cookie=f"{COOKIE}={value}")
    assert (got.status, got.body.strip()) == (200, "")
    token = issued(await client.get("/put", cookie=f"{COOKIE}={value}"))
    assert TOKEN_RE.fullmatch(token)
    assert tokens(db) == [token]


async def test_an_unknown_token_is_never_adopted(example: App, db: psycopg.Connection[Any]) -> None:
    planted = new_token()
    client = example.client()
    for path in ("/get", "/put", "/login"):
        reply = await client.get(path, cookie=f"{COOKIE}={planted}")
        assert reply.status == 200
        assert all(planted not in header for header in reply.cookies)
    assert planted not in tokens(db)
    assert len(tokens(db)) == 2


async def test_an_identity_set_by_the_app_is_not_a_token(
    serve: Callable[..., Awaitable[App]], db: psycopg.Connection[Any]
) -> None:
    chosen = new_token()

    def configure(app: web.Application) -> None:
        async def choose(request: web.Request) -> web.Response:
            session = await new_session(request)
            session.set_new_identity(chosen)
            session["message"] = MESSAGE
            return web.Response(text="ok")

        app.router.add_get("/choose", choose)

    example = await serve(configure)
    token = issued(await example.client().get("/choose"))
    assert token != chosen
    assert tokens(db) == [token]


async def test_changed_without_new_data_renews_when_due_and_never_revives(
    serve: Callable[..., Awaitable[App]], db: psycopg.Connection[Any]
) -> None:
    def configure(app: web.Application) -> None:
        async def refresh(request: web.Request) -> web.Response:
            session = await get_session(request)
            session.changed()  # aiohttp-session's way to ask for a save
            if request.query.get("delete"):
                with psycopg.connect(db.info.dsn, autocommit=True) as other:
                    other.execute("DELETE FROM sessions")  # logged out elsewhere
            return web.Response(text=str(session.get("message")))

        app.router.add_get("/refresh", refresh)

    example = await serve(configure)
    client = example.client()
    await client.get("/put")
    [(_, layout, _)] = table_rows(db)
    # A minute left of 24 hours: renewal is due.
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")
    assert (await client.get("/refresh")).body == MESSAGE
    [(_, data, expiry)] = table_rows(db)
    assert bytes(data) == bytes(layout)  # not rewritten
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)  # slid
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")
    reply = await client.get("/refresh?delete=1")
    assert reply.body == MESSAGE
    assert tokens(db) == []  # not brought back
    [header] = reply.cookies
    assert "Max-Age=0" in header


# --------------------------------------------------------------------------- headers


async def test_vary_and_cache_control_as_scs_sends_them(
    serve: Callable[..., Awaitable[App]],
) -> None:
    def configure(app: web.Application) -> None:
        async def put_cached(request: web.Request) -> web.Response:
            (await get_session(request))["message"] = "cached"  # a change: a save
            return web.Response(
                text="ok", headers={"Vary": "Accept-Encoding", "Cache-Control": "private"}
            )

        async def vary_cookie(request: web.Request) -> web.Response:
            await get_session(request)
            return web.Response(text="ok", headers={"Vary": "cookie"})

        app.router.add_get("/put-cached", put_cached)
        app.router.add_get("/vary-cookie", vary_cookie)

    example = await serve(configure)
    client = example.client()
    reply = await client.get("/put")
    assert reply.headers.getall("Vary") == ["Cookie"]
    assert reply.headers.getall("Cache-Control") == ['no-cache="Set-Cookie"']
    reply = await client.get("/put-cached")
    assert reply.headers.getall("Vary") == ["Accept-Encoding, Cookie"]
    assert reply.headers.getall("Cache-Control") == ['private, no-cache="Set-Cookie"']
    reply = await client.get("/vary-cookie")
    assert reply.headers.getall("Vary") == ["cookie"]
    assert "Cache-Control" not in reply.headers  # read only, renewal not due: no cookie
    reply = await client.get("/get")  # used the session, set no cookie
    assert reply.cookies == []
    assert reply.headers.getall("Vary") == ["Cookie"]
    assert "Cache-Control" not in reply.headers
    reply = await client.get("/logout")
    assert reply.headers.getall("Vary") == ["Cookie"]
    assert reply.headers.getall("Cache-Control") == ['no-cache="Set-Cookie"']
    reply = await client.get("/")  # never touched the session
    assert "Vary" not in reply.headers


# --------------------------------------------------------------------------- the database down


async def test_the_database_down_is_a_500_and_the_session_survives(
    serve: Callable[..., Awaitable[App]],
    sessionstore_proxy: TcpProxy,
    sessionstore_proxy_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    example = await serve(dsn=sessionstore_proxy_dsn, timeout=2)  # a connection: 2 s, not 30
    client = example.client()
    await client.get("/put")
    token = client.token()
    sessionstore_proxy.reset()
    for path in ("/get", "/logout"):
        reply = await client.get(path)
        assert reply.status == 500, path
        assert "Internal Server Error" in reply.body
        for leak in ("Traceback", "psycopg", "sessions"):
            assert leak not in reply.body
        assert reply.cookies == []
    sessionstore_proxy.passthrough()
    # The pool reconnects in the background, with backoff: wait for its connection
    # (an event-loop wait on the pool's own condition, not a sleep).
    pool = example.app[STORAGE].store._pool
    await pool.wait(timeout=30)
    assert (await client.get("/get")).body.strip() == MESSAGE
    assert client.token() == token
    assert tokens(db) == [token]


# --------------------------------------------------------------------------- sessions per user


def owners(db: psycopg.Connection[Any]) -> dict[str, str | None]:
    return dict(db.execute("SELECT token, owner FROM sessions").fetchall())


async def test_two_devices_log_out_everywhere(example: App, db: psycopg.Connection[Any]) -> None:
    laptop, phone = example.client(), example.client()
    for device in (laptop, phone):
        await device.get("/put")
        await device.get("/login")
    mine, theirs = laptop.token(), phone.token()
    assert mine is not None
    assert theirs is not None
    assert owners(db) == {mine: USER, theirs: USER}
    for device, other in ((laptop, theirs), (phone, mine)):
        reply = await device.get("/sessions")
        lines = listed(reply)
        assert len(lines) == 2
        [this] = [line for line in lines if "(this one)" in line]
        [that] = [line for line in lines if "(this one)" not in line]
        own = device.token()
        assert own is not None
        assert this.startswith(f"  {session_id(own)}  created ")
        assert that.startswith(f"  {session_id(other)}  created ")
        for token in (own, other):  # no token, nor a prefix of one
            assert token[:8] not in reply.body
    reply = await laptop.get("/logout-everywhere")
    assert (reply.status, reply.body) == (200, "Logged out 1 other session(s); this one stays.\n")
    assert owners(db) == {mine: USER}
    assert (await laptop.get("/get")).body.strip() == MESSAGE
    assert (await phone.get("/sessions")).status == 403
    assert (await phone.get("/get")).body.strip() == ""
    assert owners(db) == {mine: USER}


async def test_with_hashed_tokens_the_table_holds_no_token(
    serve: Callable[..., Awaitable[App]], db: psycopg.Connection[Any]
) -> None:
    example = await serve(hash_tokens=True)
    laptop, phone = example.client(), example.client()
    for device in (laptop, phone):
        await device.get("/login")
    token = laptop.token()
    assert token is not None
    assert hash_token(token) in tokens(db)
    assert token not in tokens(db)
    [this] = [line for line in listed(await laptop.get("/sessions")) if "(this one)" in line]
    assert this.startswith(f"  {session_id(hash_token(token))}  ")
    assert hash_token(token)[:8] not in this
    assert "Logged out 1 other" in (await laptop.get("/logout-everywhere")).body
    assert (await phone.get("/sessions")).status == 403


async def test_the_helpers_need_the_storage(serve: Callable[..., Awaitable[App]]) -> None:
    async def index(request: web.Request) -> web.Response:
        for call in (
            renew_token(request),
            session_owner(request),
            user_sessions(request),
            revoke(request, "id"),
            signed_in_within(request, 60),
        ):
            with pytest.raises(RuntimeError, match="PostgresStorage"):
                await call
        with pytest.raises(TypeError, match="str"):
            await login_session(request, 42)  # type: ignore[arg-type]
        return web.Response(text="checked")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        client = Client(f"http://127.0.0.1:{runner.addresses[0][1]}")
        try:
            assert (await client.get("/")).body == "checked"
        finally:
            await client.http.close()
    finally:
        await runner.cleanup()


async def test_postgres_context_opens_and_closes_the_pool(async_session_store: AsyncStore) -> None:
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        async_session_store._pool.conninfo, open=False, kwargs={"autocommit": True}
    )
    store = AsyncStore(pool)
    context = postgres_context(pool, store)(web.Application())
    assert pool.closed
    await anext(context)
    assert not pool.closed
    assert await store.find(new_token()) is None
    with pytest.raises(StopAsyncIteration):
        await anext(context)
    assert pool.closed


async def test_bad_arguments(async_session_store: AsyncStore) -> None:
    with pytest.raises(TypeError, match="AsyncStore"):
        PostgresStorage(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        PostgresStorage(async_session_store, max_age=0)
    with pytest.raises(ValueError, match="positive"):
        PostgresStorage(async_session_store, session_only_ttl=0)
    with pytest.raises(ValueError, match="rotate_every must be positive"):
        PostgresStorage(async_session_store, rotate_every=0)
    with pytest.raises(TypeError, match="rotate_every must be a timedelta"):
        PostgresStorage(async_session_store, rotate_every="900")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_grace must be shorter than idle_timeout"):
        PostgresStorage(async_session_store, max_age=60, rotate_every=600, rotate_grace=60)
    storage = PostgresStorage(async_session_store, rotate_every=600, record_devices=True)
    assert storage.manager.rotate_every == dt.timedelta(minutes=10)
    assert storage.manager.record_devices
    assert not PostgresStorage(async_session_store).manager.record_devices


def test_aiohttp_is_imported_only_by_the_integration() -> None:
    code = (
        "import sys, sessionstore, sessionstore.integrations, sessionstore.cli\n"
        "assert 'aiohttp' not in sys.modules and 'aiohttp_session' not in sys.modules\n"
        "sys.modules['aiohttp_session'] = None\n"
        "try:\n"
        "    import sessionstore.integrations.aiohttp\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert 'pip install "sessionstore[aiohttp]"' in out


# --------------------------------------------------------------------------- cookie defaults


async def test_cookie_defaults_httponly_lax_and_secure_outside_localhost(
    example: App,
) -> None:
    client = example.client()
    [local] = (await client.get("/put")).cookies
    assert "HttpOnly" in local
    assert "SameSite=Lax" in local
    assert "Secure" not in local  # plain HTTP on a local host
    async with (
        aiohttp.ClientSession() as bare,
        bare.get(example.url + "/put", headers={"Host": "shop.example"}) as response,
    ):
        [remote] = response.headers.getall("Set-Cookie")
    assert "Secure" in remote
    assert "HttpOnly" in remote
    assert "SameSite=Lax" in remote


# --------------------------------------------------------------------------- the session contract


def contract_app(dsn: str, **options: Any) -> web.Application:
    """The example app plus the session contract's routes."""
    app = create_app(dsn, **options)
    gates = Gates()

    async def set_(request: web.Request) -> web.Response:
        session = await get_session(request)
        key, value, group, n, hold = params(dict(request.query))
        await gates.await_(group, n, hold)
        session[key] = value
        return web.Response(text="ok")

    async def get(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({k: v for k, v in session.items() if not k.startswith("_")})

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="ok")

    async def arrived(request: web.Request) -> web.Response:
        return web.Response(text=str(gates.arrived(request.query["group"])))

    async def login(request: web.Request) -> web.Response:
        await login_session(request, request.query["user"])
        return web.Response(text="ok")

    async def sessions(request: web.Request) -> web.Response:
        listed = await user_sessions(request)
        return web.Response(text=contract.sessions_json(listed), content_type="application/json")

    async def revoke_(request: web.Request) -> web.Response:
        return web.json_response(await revoke(request, request.query["id"]))

    async def fresh(request: web.Request) -> web.Response:
        within = float(request.query["within"])
        return web.json_response(await signed_in_within(request, within))

    async def release(request: web.Request) -> web.Response:
        gates.release(request.query["hold"])
        return web.Response(text="ok")

    for path, handler in (
        ("/c/set", set_),
        ("/c/get", get),
        ("/c/logout", logout),
        ("/c/arrived", arrived),
        ("/c/release", release),
        ("/c/login", login),
        ("/c/sessions", sessions),
        ("/c/revoke", revoke_),
        ("/c/fresh", fresh),
    ):
        app.router.add_get(path, handler)
    return app


@contextlib.contextmanager
def served_in_a_thread(app: web.Application) -> Iterator[contract.Served]:
    """Serve `app` on aiohttp's own server, in an event loop of a thread of its own."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, name="test-aiohttp")
    thread.start()
    try:
        yield contract.Served(f"http://127.0.0.1:{port}", COOKIE)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture
def contract_served(sessionstore_dsn: str) -> Iterator[Callable[..., contract.Served]]:
    """Start the contract app (with `create_app`'s options); stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> contract.Served:
            return stack.enter_context(
                served_in_a_thread(contract_app(sessionstore_dsn, **options))
            )

        yield start


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


def test_renewal_on_every_request_moves_the_row_and_the_cookie(
    contract_served: Callable[..., contract.Served], db: psycopg.Connection[Any]
) -> None:
    app = contract_served(renew_after=0)
    token = app.start()
    before = contract.row_version(db)
    reply = app.get("/c/get", token)
    assert contract.cookie_value(reply, COOKIE) == token  # the same token, a new expiry
    assert contract.row_version(db) != before


#: The per-user checks' app (see `_session_contract`).
PER_USER: dict[str, Any] = {
    "idle_timeout": 60,
    "max_sessions_per_owner": contract.CAP,
    "storage_options": {
        "rotate_every": contract.ROTATE_EVERY,
        "rotate_grace": contract.ROTATE_GRACE,
        "record_devices": True,
    },
}


@pytest.mark.parametrize("check", contract.PER_USER_CHECKS)
def test_sessions_per_user(
    contract_served: Callable[..., contract.Served], check: Callable[[contract.Served], None]
) -> None:
    check(contract_served(**PER_USER))


def test_devices_are_not_recorded_by_default(
    contract_served: Callable[..., contract.Served], db: psycopg.Connection[Any]
) -> None:
    app = contract_served()
    token = contract.logged_in(app, "ann", "Laptop/1.0")
    [listed] = contract.listing(app, token)
    assert (listed["ip"], listed["user_agent"]) == (None, None)
    assert listed["signed_in"] is not None
    [(_, data, _)] = table_rows(db)
    assert "Laptop" not in bytes(data).decode()
    assert "127.0.0.1" not in bytes(data).decode()


# --------------------------------------------------------------------------- gunicorn --preload


@dataclass
class Gunicorn:
    """A gunicorn master (the leader of its process group) and its URL."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            pytest.fail("gunicorn ignored SIGTERM:\n" + self.log.read_text(errors="replace"))


def start_gunicorn(app: str, env: dict[str, str], log: Path, cwd: Path | None = None) -> Gunicorn:
    """``gunicorn --preload`` with aiohttp's worker, two workers, on a socket bound here."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port, fd = sock.getsockname()[1], sock.fileno()
    argv = [
        *(sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"),
        *("-k", "aiohttp.GunicornWebWorker", "--bind", f"fd://{fd}", "--graceful-timeout", "10"),
        app,
    ]
    path = os.pathsep.join(filter(None, [str(cwd or ""), os.environ.get("PYTHONPATH", "")]))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            pass_fds=[fd],
            env={**os.environ, **env, "PYTHONPATH": path},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sock.close()
    return Gunicorn(f"http://127.0.0.1:{port}", proc, log)


def setup_snippets() -> str:
    """The set-up code of docs/integrations-aiohttp.md, as a reader would paste it."""
    blocks = [b for b in blocks_of(ROOT / "docs" / "integrations-aiohttp.md") if not b.fragment]
    return "\n".join(block.code for block in blocks if "web.Application()" in block.code)


def put_then_get(url: str) -> None:
    for _ in range(4):  # more sessions than workers: each worker serves some
        client = HttpClient(url)
        put = client.get("/put")
        assert put.status == 200, put.body
        got = client.get("/get")
        assert (got.status, got.body.strip()) == (200, MESSAGE)


@pytest.mark.parametrize("name", ["app", "own"])
def test_the_docs_set_up_works_under_gunicorn_preload(
    sessionstore_dsn: str, tmp_path: Path, name: str
) -> None:
    from sessionstore._from_dsn import create_table

    create_table(sessionstore_dsn)
    (tmp_path / "docs_setup.py").write_text(setup_snippets())
    env = {"DATABASE_URL": sessionstore_dsn}
    server = start_gunicorn(f"docs_setup:{name}", env, tmp_path / "gunicorn.log", tmp_path)
    try:
        put_then_get(server.url)
    finally:
        server.stop()
    assert "ForkedProcessError" not in server.log.read_text(errors="replace")


def test_the_example_app_loads_as_module_app_under_gunicorn_preload(
    sessionstore_dsn: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    from sessionstore._from_dsn import create_table

    create_table(sessionstore_dsn, owners=True)
    server = start_gunicorn(
        "sessionstore.examples.aiohttp_app:app",
        {"SESSIONSTORE_DSN": sessionstore_dsn},
        tmp_path / "gunicorn.log",
    )
    try:
        put_then_get(server.url)
    finally:
        server.stop()
    assert len(tokens(db)) == 4
