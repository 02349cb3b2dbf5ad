"""The Starlette integration, through the example app served by uvicorn over HTTP.

The app is `sessionstore.examples.starlette_app`, the one the demo serves. Each test
runs it (or a variant) in a uvicorn server thread on the test's database, drives it
with urllib and a cookie jar, and looks at the sessions table directly; the session
contract (`_session_contract`) runs on it with the contract's routes added, and the
example is served by gunicorn --preload as deployed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _session_contract as contract
import httpx
import psycopg
import pytest
import uvicorn
from _example_contract import (
    MESSAGE,
    USER,
    check_a_device_is_revoked_by_its_listed_id,
    check_two_devices_log_out_everywhere,
    owners,
)
from _gates import Gates, params
from _gunicorn import UVICORN_WORKER, docs_set_up, gunicorn
from _http import (
    Client,
    check_scs_headers,
    issued_token,
    load_example,
    run_uvicorn,
    stop_uvicorn,
)
from _session_contract import cookie_value
from _support import new_token, table_rows, wait_until
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starsessions import InMemoryStore, SessionAutoloadMiddleware, regenerate_session_id

from sessionstore import AsyncStore, Store
from sessionstore.integrations.starlette import (
    PostgresStore,
    SessionMiddleware,
    login_session,
    logout_everywhere,
    revoke,
    session_owner,
    signed_in_within,
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


def test_a_read_renews_only_when_due_and_never_rewrites_the_data(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    """Renewal is a touch: the expiry moves, the data stays as stored, the cookie is re-sent."""
    example = serve(lifetime=dt.timedelta(hours=1))
    client = example.client()
    client.get("/put")
    [(_, before, _)] = table_rows(db)
    assert client.get("/get").cookies == []  # just written: not due
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")  # due now
    reply = client.get("/get")
    assert reply.body.strip() == MESSAGE
    [header] = reply.cookies
    assert {"max-age=3599", "max-age=3600"} & {p.strip() for p in header.lower().split(";")}
    [(_, after, expiry)] = table_rows(db)
    assert bytes(after) == bytes(before)
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=59)


def test_a_due_renewal_of_a_session_deleted_meanwhile_does_not_bring_it_back(
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
        renew_after=0,
    )
    client = example.client()
    client.get("/put")
    reply = client.get("/read-while-deleted")
    assert (reply.status, reply.body) == (200, MESSAGE)
    assert cookie_value(reply, "session") == ""  # the session is gone: so is its cookie
    assert tokens(db) == []
    assert client.get("/get").body.strip() == ""
    assert tokens(db) == []


def test_starsessions_regenerate_session_id_renews_the_token(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    async def regenerate(request: Request) -> PlainTextResponse:
        regenerate_session_id(request)
        return PlainTextResponse("ok")

    example = serve(lambda app: app.router.routes.append(Route("/regenerate", regenerate)))
    client = example.client()
    client.get("/put")
    old = client.token()
    client.get("/regenerate")
    new = client.token()
    assert new is not None
    assert new != old
    assert tokens(db) == [new]
    assert client.get("/get").body.strip() == MESSAGE


def test_the_cookie_is_secure_by_default_except_on_localhost(serve: Callable[..., App]) -> None:
    example = serve()
    local = example.client().get("/put")
    assert "secure" not in local.cookies[0].lower()
    remote = httpx.get(example.url + "/put", headers={"Host": "app.example"})
    [header] = remote.headers.get_list("set-cookie")
    parts = {part.strip().lower() for part in header.split(";")}
    assert {"httponly", "samesite=lax", "secure"} <= parts


# --------------------------------------------------------------------------- headers


def test_vary_and_cache_control_as_scs_sends_them(serve: Callable[..., App]) -> None:
    # Each stores a value of its own: storing what is there already changes nothing,
    # which writes nothing and sets no cookie.
    async def put_cached(request: Request) -> PlainTextResponse:
        request.session["message"] = "cached"
        response = PlainTextResponse("ok", headers={"Cache-Control": "private"})
        response.headers.append("Vary", "Accept-Encoding")
        response.headers.append("Vary", "Origin")
        return response

    async def put_uncached(request: Request) -> PlainTextResponse:
        request.session["message"] = "uncached"
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


def test_a_device_is_revoked_by_its_listed_id(example: App) -> None:
    check_a_device_is_revoked_by_its_listed_id(example)


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


# --------------------------------------------------------------------------- the session contract


def contract_routes(app: Starlette) -> None:
    """Add the session contract's routes (see `_session_contract`) to the app."""
    gates = Gates()

    async def set_key(request: Request) -> PlainTextResponse:
        key, value, group, n, hold = params(dict(request.query_params))
        request.session.get(key)  # loaded (by the autoload middleware) before the gate
        await gates.await_(group, n, hold)
        request.session[key] = value
        return PlainTextResponse("ok")

    async def get_data(request: Request) -> PlainTextResponse:
        data = {k: v for k, v in request.session.items() if not k.startswith("_")}
        return PlainTextResponse(json.dumps(data))

    async def logout(request: Request) -> PlainTextResponse:
        request.session.clear()
        return PlainTextResponse("ok")

    async def arrived(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(gates.arrived(request.query_params["group"])))

    async def release(request: Request) -> PlainTextResponse:
        gates.release(request.query_params["hold"])
        return PlainTextResponse("ok")

    async def login(request: Request) -> PlainTextResponse:
        await login_session(request, request.query_params["user"])
        return PlainTextResponse("ok")

    async def sessions(request: Request) -> PlainTextResponse:
        return PlainTextResponse(json.dumps(contract.as_json(await user_sessions(request))))

    async def revoke_one(request: Request) -> PlainTextResponse:
        return PlainTextResponse(json.dumps(await revoke(request, request.query_params["id"])))

    async def fresh(request: Request) -> PlainTextResponse:
        within = float(request.query_params["within"])
        return PlainTextResponse(json.dumps(await signed_in_within(request, within)))

    app.router.routes.extend(
        [
            Route("/c/set", set_key),
            Route("/c/get", get_data),
            Route("/c/logout", logout),
            Route("/c/arrived", arrived),
            Route("/c/release", release),
            Route("/c/login", login),
            Route("/c/sessions", sessions),
            Route("/c/revoke", revoke_one),
            Route("/c/fresh", fresh),
        ]
    )


@pytest.fixture
def served(serve: Callable[..., App]) -> contract.Served:
    return contract.Served(serve(contract_routes).url, "session")


@pytest.mark.parametrize("count", [2, 4])
def test_overlapping_requests_keep_every_key(served: contract.Served, count: int) -> None:
    contract.check_overlapping_requests_keep_every_key(served, count)


def test_many_sessions_lose_no_key(served: contract.Served) -> None:
    contract.check_many_sessions_lose_no_key(served)


def test_a_logout_racing_a_slower_request_stays_logged_out(
    served: contract.Served, db: psycopg.Connection[Any]
) -> None:
    contract.check_a_logout_racing_a_slower_request_stays_logged_out(served, db)


def test_a_read_only_request_writes_nothing(
    served: contract.Served, db: psycopg.Connection[Any]
) -> None:
    contract.check_a_read_only_request_writes_nothing(served, db)


def test_the_idle_timeout_ends_a_session(serve: Callable[..., App]) -> None:
    app = serve(contract_routes, lifetime=dt.timedelta(seconds=2))
    contract.check_the_idle_timeout_ends_a_session(contract.Served(app.url, "session"), idle=2)


def test_the_lifetime_ends_a_busy_session(serve: Callable[..., App]) -> None:
    app = serve(
        contract_routes,
        lifetime=dt.timedelta(seconds=4),
        absolute_lifetime=dt.timedelta(seconds=8),
        renew_after=0,
    )
    served = contract.Served(app.url, "session")
    contract.check_the_lifetime_ends_a_busy_session(served, idle=4, lifetime=8)


@pytest.fixture
def per_user(serve: Callable[..., App]) -> contract.Served:
    """The contract app with the per-user settings (see `_session_contract`)."""

    def configure(app: Starlette) -> None:
        contract_routes(app)
        set_middleware_options(
            app,
            record_devices=True,
            rotate_every=contract.ROTATE_EVERY,
            rotate_grace=contract.ROTATE_GRACE,
        )

    app = serve(configure, lifetime=dt.timedelta(seconds=60), max_sessions_per_owner=contract.CAP)
    return contract.Served(app.url, "session")


@pytest.mark.parametrize("check", contract.PER_USER_CHECKS)
def test_sessions_per_user(
    per_user: contract.Served, check: Callable[[contract.Served], None]
) -> None:
    """The per-user checks (see _session_contract), on a capped store."""
    check(per_user)


def test_devices_are_not_recorded_by_default(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: Starlette) -> None:
        contract_routes(app)
        [middleware] = [m for m in app.user_middleware if m.kwargs.get("record_devices")]
        del middleware.kwargs["record_devices"]  # the example records them

    served = contract.Served(serve(configure).url, "session")
    contract.check_devices_are_not_recorded_by_default(served, db)


@pytest.mark.parametrize("source", ["example", "docs"])
def test_the_example_app_under_gunicorn_preload(
    sessionstore_dsn: str, tmp_path: Path, source: str
) -> None:
    """``module:app`` loaded before the fork: the example app, and the docs' set-up as written."""
    if source == "example":
        options: tuple[str, ...] = ("-k", UVICORN_WORKER, "sessionstore.examples.starlette_app:app")
    else:
        module = docs_set_up("integrations-starlette.md", tmp_path)
        options = ("-k", UVICORN_WORKER, "--chdir", str(tmp_path), f"{module}:app")
    with gunicorn(sessionstore_dsn, tmp_path / "gunicorn.log", *options) as url:
        for _ in range(2):  # a session per worker, most likely
            client = Client(url)
            assert client.get("/put").status == 200
            reply = client.get("/get")
            assert (reply.status, reply.body.strip()) == (200, MESSAGE)


# --------------------------------------------------------------------------- set-up errors


async def test_starsessions_own_middleware_is_refused(async_session_store: AsyncStore) -> None:
    store = PostgresStore(async_session_store)
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await store.read(new_token(), 0)
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await store.write(new_token(), b"{}", 0, 0)
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await store.remove(new_token())
    with pytest.raises(TypeError, match="PostgresStore"):
        SessionMiddleware(PlainTextResponse("x"), store=InMemoryStore())  # type: ignore[arg-type]


async def test_the_helpers_need_the_middleware_and_a_valid_owner() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    for helper in (session_owner, user_sessions, logout_everywhere):
        with pytest.raises(RuntimeError, match="SessionMiddleware"):
            await helper(request)
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await revoke(request, "id")
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await signed_in_within(request, 60)
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await login_session(request, "bob")
    with pytest.raises(TypeError, match="str"):
        await login_session(request, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        await login_session(request, "")


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"rotate_every": 0}, ValueError, "rotate_every must be positive"),
        ({"rotate_every": "1h"}, TypeError, "rotate_every must be a timedelta"),
        ({"rotate_every": 600, "rotate_grace": 3600}, ValueError, "shorter than idle_timeout"),
        ({"rotate_grace": -1}, ValueError, "rotate_grace must be positive"),
    ],
)
async def test_the_rotation_settings_are_checked(
    async_session_store: AsyncStore, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    store = PostgresStore(async_session_store)
    with pytest.raises(error, match=match):
        SessionMiddleware(PlainTextResponse("x"), store=store, lifetime=3600, **options)
    default = SessionMiddleware(PlainTextResponse("x"), store=store, lifetime=3600).manager
    assert (default.rotate_every, default.record_devices) == (None, False)


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
