"""The Starlette integration, through the example app served by uvicorn over HTTP.

The app is `sessionstore.examples.starlette_app`, the one the demo serves.

Each test runs the example app in a uvicorn server thread on the test's database and
drives it with urllib and a cookie jar, then looks at the sessions table directly.
The store's own contract (which tokens it adopts, expiries) is tested on it directly.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import uvicorn
from _example_contract import MESSAGE, USER, check_two_devices_log_out_everywhere, owners
from _http import (
    Client,
    check_scs_headers,
    issued_token,
    load_example,
    run_uvicorn,
    stop_uvicorn,
)
from _support import new_token, table_rows, wait_until
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starsessions import SessionAutoloadMiddleware

from sessionstore import AsyncStore, Store
from sessionstore.integrations.starlette import (
    PostgresStore,
    SessionMiddleware,
    login_session,
    logout_everywhere,
    session_owner,
    user_sessions,
)

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass
class App:
    url: str
    app: Starlette

    def client(self) -> Client:
        return Client(self.url)


@pytest.fixture
def serve(sessionstore_dsn: str) -> Iterator[Callable[..., App]]:
    """Serve the example app (on the test's database) in a uvicorn thread."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(configure: Callable[[Starlette], None] | None = None, **options: Any) -> App:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            sessionstore_dsn, open=False, min_size=1, max_size=4, kwargs={"autocommit": True}
        )
        app = load_example("starlette_app.py").create_app(pool, **options)
        if configure is not None:
            configure(app)
        server, thread, url = run_uvicorn(app)
        running.append((server, thread))
        return App(url, app)

    yield start
    for server, thread in running:
        stop_uvicorn(server, thread)


@pytest.fixture
def example(serve: Callable[..., App]) -> App:
    return serve()


def tokens(db: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in table_rows(db)]


def set_middleware_options(
    app: Starlette, middleware_class: type[Any] = SessionMiddleware, **options: Any
) -> None:
    """Change the options of one of the example's middlewares (before its first request)."""
    # Starlette types `cls` as a factory protocol, which mypy can't see a class meets.
    [middleware] = [
        m
        for m in app.user_middleware
        if m.cls is middleware_class  # type: ignore[comparison-overlap]
    ]
    middleware.kwargs.update(options)


# --------------------------------------------------------------------------- the Go example


def test_put_then_get(example: App, db: psycopg.Connection[Any]) -> None:
    client = example.client()
    assert client.get("/put").status == 200
    got = client.get("/get")
    assert (got.status, got.body.strip()) == (200, MESSAGE)
    token = client.token()
    assert token is not None
    assert TOKEN_RE.fullmatch(token)
    assert tokens(db) == [token]
    data = json.loads(bytes(table_rows(db)[0][1]))
    assert data["message"] == MESSAGE


def test_a_second_client_does_not_see_the_first_ones_data(
    example: App, db: psycopg.Connection[Any]
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


def test_the_session_expires(
    serve: Callable[..., App], session_store: Store, db: psycopg.Connection[Any]
) -> None:
    example = serve(lifetime=dt.timedelta(seconds=3))
    client = example.client()
    reply = client.get("/put")
    token = issued_token(reply)
    assert re.search(r"max-age=[12];", reply.cookies[0])  # starsessions: whole seconds left
    assert client.get("/get", cookie=f"session={token}").body.strip() == MESSAGE
    wait_until(lambda: session_store.find(token) is None)
    # The browser would drop the cookie too; send it anyway, as a stale tab would.
    reply = client.get("/get", cookie=f"session={token}")
    assert (reply.status, reply.body.strip()) == (200, "")


def test_renew_token_keeps_the_data_and_kills_the_old_token(
    example: App, session_store: Store, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    client.get("/put")
    old = client.token()
    reply = client.get("/login")
    assert reply.status == 200
    new = client.token()
    assert old is not None
    assert new is not None
    assert new != old
    assert TOKEN_RE.fullmatch(new)
    assert tokens(db) == [new]
    assert session_store.find(old) is None
    assert client.get("/get").body.strip() == MESSAGE
    assert client.get("/get", cookie=f"session={old}").body.strip() == ""


def test_logout_deletes_the_row_and_the_cookie(example: App, db: psycopg.Connection[Any]) -> None:
    client = example.client()
    client.get("/put")
    token = client.token()
    assert tokens(db) == [token]
    reply = client.get("/logout")
    assert reply.status == 200
    assert tokens(db) == []
    [header] = reply.cookies
    assert "expires=Thu, 01 Jan 1970" in header
    assert client.token() is None
    assert client.get("/get", cookie=f"session={token}").body.strip() == ""


@pytest.mark.parametrize(
    "value",
    ["garbage", "x" * 5000, "a%00b", '"quoted"', "tok\\u0000en", "A" * 42 + "!", "0" * 32],
)
def test_a_tampered_cookie_is_a_new_session(
    example: App, db: psycopg.Connection[Any], value: str
) -> None:
    client = example.client()
    got = client.get("/get", cookie=f"session={value}")
    assert (got.status, got.body.strip()) == (200, "")
    put = client.get("/put", cookie=f"session={value}")
    assert put.status == 200
    issued = issued_token(put)
    assert TOKEN_RE.fullmatch(issued)
    assert issued != value
    assert tokens(db) == [issued]


def test_an_unknown_token_is_never_adopted(example: App, db: psycopg.Connection[Any]) -> None:
    """Session fixation: a token planted in the victim's browser must not become theirs."""
    planted = new_token()
    client = example.client()
    assert client.get("/get", cookie=f"session={planted}").body.strip() == ""
    for path in ("/put", "/login"):
        reply = client.get(path, cookie=f"session={planted}")
        assert reply.status == 200
        assert TOKEN_RE.fullmatch(issued_token(reply))
        assert issued_token(reply) != planted
    assert planted not in tokens(db)


def test_untouched_sessions_write_nothing(example: App, db: psycopg.Connection[Any]) -> None:
    client = example.client()
    for path in ("/get", "/no-such-page", "/logout"):
        assert client.get(path).cookies == []
    assert tokens(db) == []


@pytest.mark.parametrize("path", ["/put", "/get", "/login", "/logout"])
def test_a_store_failure_is_a_clean_500(
    example: App, db: psycopg.Connection[Any], path: str
) -> None:
    client = example.client()
    client.get("/put")
    db.execute("ALTER TABLE sessions RENAME TO sessions_gone")
    reply = client.get(path)
    assert reply.status == 500
    assert reply.body == "Internal Server Error"
    assert reply.cookies == []


def test_a_failed_save_is_a_clean_500(example: App, db: psycopg.Connection[Any]) -> None:
    db.execute("ALTER TABLE sessions ADD CONSTRAINT no_writes CHECK (false) NOT VALID")
    reply = example.client().get("/put")  # nothing to read: only the write fails
    assert (reply.status, reply.body) == (500, "Internal Server Error")
    assert reply.cookies == []


def test_cookie_attributes_follow_the_middleware_settings(serve: Callable[..., App]) -> None:
    example = serve(
        lambda app: set_middleware_options(
            app,
            cookie_name="sid",
            cookie_domain="example.test",
            cookie_path="/",
            cookie_https_only=True,
            cookie_same_site="strict",
        ),
        lifetime=dt.timedelta(hours=2),
    )
    reply = example.client().get("/put")
    [header] = reply.cookies
    name, value = header.split(";", 1)[0].split("=", 1)
    assert name == "sid"
    assert TOKEN_RE.fullmatch(value)
    parts = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"path=/", "domain=example.test", "httponly", "secure", "samesite=strict"} <= parts
    assert {"max-age=7199", "max-age=7200"} & parts
    got = example.client().get("/get", cookie=f"sid={value}")
    assert got.body.strip() == MESSAGE


def test_a_browser_session_cookie_gets_the_session_only_ttl(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    example = serve(lifetime=dt.timedelta(0))
    client = example.client()
    reply = client.get("/put")
    [header] = reply.cookies
    assert "max-age" not in header.lower()
    assert "expires" not in header.lower()
    [(_, _, expiry)] = table_rows(db)
    left = expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23, minutes=59) < left <= dt.timedelta(hours=24)
    assert client.get("/get").body.strip() == MESSAGE


def test_refresh_touches_and_keeps_what_another_request_wrote_meanwhile(
    serve: Callable[..., App], sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """A request that only reads the session moves the expiry and leaves the data alone.

    With ``lifetime=0`` starsessions saves the session on every request. Between this
    request's read and its save, "another request" writes new data for the session.
    Rewriting the payload to slide the expiry would put back the copy this request
    read; a touch moves only the expiry.
    """
    written_meanwhile = json.dumps({"message": "written meanwhile"}).encode()

    async def read_while_another_writes(request: Request) -> PlainTextResponse:
        message = str(request.session["message"])
        token = request.cookies["session"]
        async with await psycopg.AsyncConnection.connect(sessionstore_dsn) as conn:
            await conn.execute(
                "UPDATE sessions SET data = %s, expiry = now() + interval '1 minute'"
                " WHERE token = %s",
                (written_meanwhile, token),
            )
            await conn.commit()
        return PlainTextResponse(message)

    example = serve(
        lambda app: app.router.routes.append(
            Route("/read-while-another-writes", read_while_another_writes)
        ),
        lifetime=dt.timedelta(0),
    )
    client = example.client()
    client.get("/put")
    reply = client.get("/read-while-another-writes")
    assert (reply.status, reply.body) == (200, MESSAGE)
    [(token, data, expiry)] = table_rows(db)
    assert token == client.token()
    assert bytes(data) == written_meanwhile
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)
    assert client.get("/get").body.strip() == "written meanwhile"


def test_refresh_does_not_rewrite_the_data(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    # starsessions stamps last_access into the data on every load: a rewrite changes
    # the stored bytes, a touch does not.
    example = serve(lifetime=dt.timedelta(0))
    client = example.client()
    client.get("/put")
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")
    [(_, before, _)] = table_rows(db)
    for _ in range(2):
        assert client.get("/get").body.strip() == MESSAGE
    [(_, after, expiry)] = table_rows(db)
    assert bytes(after) == bytes(before)
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)
    # A change is written.
    client.get("/login")
    [(_, changed, _)] = table_rows(db)
    assert json.loads(bytes(changed))["_session_owner"] == USER


def test_refresh_of_a_session_deleted_meanwhile_does_not_bring_it_back(
    serve: Callable[..., App], sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    async def read_while_deleted(request: Request) -> PlainTextResponse:
        message = str(request.session["message"])
        # What "log out everywhere" on another device does meanwhile.
        async with await psycopg.AsyncConnection.connect(sessionstore_dsn) as conn:
            await conn.execute(
                "DELETE FROM sessions WHERE token = %s", (request.cookies["session"],)
            )
            await conn.commit()
        return PlainTextResponse(message)

    example = serve(
        lambda app: app.router.routes.append(Route("/read-while-deleted", read_while_deleted)),
        lifetime=dt.timedelta(0),
    )
    client = example.client()
    client.get("/put")
    reply = client.get("/read-while-deleted")
    assert (reply.status, reply.body) == (200, MESSAGE)
    assert tokens(db) == []
    assert client.get("/get").body.strip() == ""
    assert tokens(db) == []


# --------------------------------------------------------------------------- headers


def test_vary_and_cache_control_as_scs_sends_them(serve: Callable[..., App]) -> None:
    async def put_cached(request: Request) -> PlainTextResponse:
        request.session["message"] = MESSAGE
        response = PlainTextResponse("ok", headers={"Cache-Control": "private"})
        response.headers.append("Vary", "Accept-Encoding")
        response.headers.append("Vary", "Origin")
        return response

    async def put_uncached(request: Request) -> PlainTextResponse:
        request.session["message"] = MESSAGE
        return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})

    async def vary_cookie(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"Vary": "cookie"})

    async def untouched(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    def configure(app: Starlette) -> None:
        app.router.routes.extend(
            [
                Route("/put-cached", put_cached),
                Route("/put-uncached", put_uncached),
                Route("/vary-cookie", vary_cookie),
                Route("/untouched", untouched),
            ]
        )
        # Every other path loads the session first.
        set_middleware_options(app, SessionAutoloadMiddleware, paths=[r"/(?!untouched)"])

    example = serve(configure)
    client = example.client()
    check_scs_headers(client, untouched="/untouched")


def test_another_cookie_gets_no_cache_control(serve: Callable[..., App]) -> None:
    async def other_cookie(request: Request) -> PlainTextResponse:
        response = PlainTextResponse("ok")
        response.set_cookie("theme", "dark")
        return response

    example = serve(lambda app: app.router.routes.append(Route("/other-cookie", other_cookie)))
    reply = example.client().get("/other-cookie")
    [header] = reply.cookies
    assert header.startswith("theme=dark;")
    assert reply.header("Vary") == ["Cookie"]  # the session was loaded
    assert reply.header("Cache-Control") == []


# --------------------------------------------------------------------------- sessions per user


def test_two_devices_log_out_everywhere(example: App, db: psycopg.Connection[Any]) -> None:
    check_two_devices_log_out_everywhere(example, db)


def test_login_creates_an_owned_row_and_logout_deletes_it(
    example: App, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    assert client.get("/sessions").status == 403  # no session, nobody's
    client.get("/login")
    token = client.token()
    assert token is not None
    assert owners(db) == {token: USER}
    client.get("/put")  # later saves keep the owner (the data holds it too)
    assert owners(db) == {token: USER}
    client.get("/logout")
    assert owners(db) == {}
    assert client.get("/sessions").status == 403


# --------------------------------------------------------------------------- the store itself


def in_fresh_context(coro: Any) -> Any:
    """Run a coroutine as a task with an empty context (as a new request would)."""
    return asyncio.create_task(coro, context=contextvars.Context())


async def test_store_reads_nothing_for_non_tokens(async_session_store: AsyncStore) -> None:
    store = PostgresStore(async_session_store)
    for value in ("", "abc", "x" * 5000, "\x00" * 43, "é" * 43, "0" * 32):
        assert await store.read(value, 0) == b""
        await store.remove(value)  # no error, no query


async def test_store_issues_its_own_tokens(async_session_store: AsyncStore) -> None:
    store = PostgresStore(async_session_store)
    hex_id = "0123456789abcdef0123456789abcdef"  # what starsessions generates
    token = await store.write(hex_id, b"{}", 3600, 3600)
    assert TOKEN_RE.fullmatch(token)
    assert await async_session_store.find(token) == b"{}"
    # A live token is kept, whether or not this context read it first.
    assert await in_fresh_context(store.write(token, b'{"a":1}', 3600, 3600)) == token
    assert await store.read(token, 3600) == b'{"a":1}'
    assert await store.write(token, b'{"a":2}', 3600, 3600) == token
    # An unknown token is replaced, read or not.
    unknown = new_token()
    assert await in_fresh_context(store.write(unknown, b"{}", 3600, 3600)) != unknown
    assert await store.read(unknown, 3600) == b""
    assert await store.write(unknown, b"{}", 3600, 3600) != unknown
    assert await async_session_store.find(unknown) is None


async def test_store_expiries(async_session_store: AsyncStore, db: psycopg.Connection[Any]) -> None:
    store = PostgresStore(async_session_store, session_only_ttl=dt.timedelta(minutes=5))
    session_only = await store.write("new", b"{}", 0, 0)
    timed = await store.write("new", b"{}", 3600, 100)
    expiries = {row[0]: row[2] - dt.datetime.now(dt.UTC) for row in table_rows(db)}
    assert dt.timedelta(minutes=4) < expiries[session_only] <= dt.timedelta(minutes=5)
    assert dt.timedelta(seconds=90) < expiries[timed] <= dt.timedelta(seconds=100)
    # Past its lifetime (non-rolling): the row goes, as the cookie does.
    assert await store.write(timed, b"{}", 3600, 0) == timed
    assert await async_session_store.find(timed) is None


async def test_store_touches_unchanged_data_and_creates_new_sessions(
    async_session_store: AsyncStore, db: psycopg.Connection[Any]
) -> None:
    store = PostgresStore(async_session_store)
    first = json.dumps({"a": 1, "__metadata__": {"created": 1.0, "last_access": 1.0}})
    token = await store.write("new", first.encode(), 0, 0)
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")
    assert await in_fresh_context(store.read(token, 0)) == first.encode()
    # Only last_access differs (starsessions stamps it on every load): touched.
    again = json.dumps({"a": 1, "__metadata__": {"created": 1.0, "last_access": 2.0}})
    assert await store.write(token, again.encode(), 0, 0) == token
    [(_, data, expiry)] = table_rows(db)
    assert bytes(data) == first.encode()
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)
    # Anything else differs: written.
    changed = json.dumps({"a": 2, "__metadata__": {"created": 1.0, "last_access": 3.0}})
    assert await store.write(token, changed.encode(), 0, 0) == token
    assert bytes(table_rows(db)[0][1]) == changed.encode()
    # Data that does not decode is compared as different, and written.
    assert await store.write(token, b"not json", 0, 0) == token
    assert bytes(table_rows(db)[0][1]) == b"not json"


async def test_the_helpers_need_the_middleware_and_a_valid_owner() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    for helper in (session_owner, user_sessions, logout_everywhere):
        with pytest.raises(RuntimeError, match="SessionMiddleware"):
            await helper(request)
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await login_session(request, "bob")
    with pytest.raises(TypeError, match="str"):
        await login_session(request, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        await login_session(request, "")


async def test_store_bad_arguments(async_session_store: AsyncStore, session_store: Store) -> None:
    with pytest.raises(TypeError, match="AsyncStore"):
        PostgresStore(session_store)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        PostgresStore(async_session_store, session_only_ttl=-1)
    assert repr(PostgresStore(async_session_store)) == '<PostgresStore "sessions">'


def test_starlette_is_imported_only_by_the_integration() -> None:
    code = (
        "import sys, sessionstore, sessionstore.integrations, sessionstore.cli\n"
        "loaded = [m for m in ('starlette', 'starsessions', 'uvicorn', 'flask')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "sys.modules['starsessions'] = None\n"
        "try:\n"
        "    import sessionstore.integrations.starlette\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert 'pip install "sessionstore[starlette]"' in out
