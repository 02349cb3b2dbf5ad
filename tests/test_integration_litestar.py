"""The Litestar integration, through the example app served by uvicorn over HTTP.

The app is `sessionstore.examples.litestar_app`, the one the demo serves. Each test
runs it (or a variant) in a uvicorn server thread on the test's database, drives it
with urllib or httpx and a cookie jar, and looks at the sessions table directly; the
session contract (`_session_contract`) runs on it with the contract's routes added,
and the example is served by gunicorn --preload as deployed. `PostgresStore`'s own
contract (Litestar's ``Store`` API) is tested on it directly.
"""

from __future__ import annotations

import datetime as dt
import itertools
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
from _example_contract import check_a_device_is_revoked_by_its_listed_id
from _gates import Gates, params
from _gunicorn import UVICORN_WORKER, docs_set_up, gunicorn
from _http import Client, Reply, issued_token, listed, run_uvicorn, stop_uvicorn
from _support import new_token, table_rows, wait_until
from litestar import Litestar, Request, Response, get
from litestar.config.response_cache import ResponseCacheConfig
from litestar.exceptions import ImproperlyConfiguredException
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.stores.base import Store
from psycopg_pool import AsyncConnectionPool

from sessionstore import AsyncStore
from sessionstore._core import hash_token
from sessionstore.cleanup import NoCleanup
from sessionstore.examples.litestar_app import create_app
from sessionstore.integrations.litestar import (
    NO_EXPIRY,
    PostgresStore,
    SessionConfig,
    login_session,
    renew_token,
    revoke,
    session_owner,
    signed_in_within,
    user_sessions,
)
from sessionstore.manager import CREATED_KEY, DEVICE_KEY, session_id
from sessionstore.testing import TcpProxy

MESSAGE = "Hello from a session!"
USER = "alice"  # whom the example's /login logs in
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
PREFIX = "litestar/sessions:"  # how the example's session store keys its rows


@dataclass
class App:
    url: str
    app: Litestar

    def client(self) -> Client:
        return Client(self.url)


@pytest.fixture
def serve(sessionstore_dsn: str) -> Iterator[Callable[..., App]]:
    """Serve the example app (on the test's database, or `dsn`) in a uvicorn thread."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        configure: Callable[[Litestar], None] | None = None,
        dsn: str | None = None,
        **options: Any,
    ) -> App:
        app = create_app(dsn or sessionstore_dsn, **options)
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
    """The tokens of the example's sessions (the keys, without the namespace)."""
    return [row[0].removeprefix(PREFIX) for row in table_rows(db)]


# --------------------------------------------------------------------------- the Go example


def test_put_then_get(example: App, db: psycopg.Connection[Any]) -> None:
    client = example.client()
    assert client.get("/put").status == 200
    got = client.get("/get")
    assert (got.status, got.body.strip()) == (200, MESSAGE)
    token = client.token()
    assert token is not None
    assert TOKEN_RE.fullmatch(token)
    [(key, data, _)] = table_rows(db)
    assert key == PREFIX + token
    stored = json.loads(bytes(data))
    assert stored.pop(DEVICE_KEY)["ip"] == "127.0.0.1"  # the example records devices
    assert stored == {"message": MESSAGE, CREATED_KEY: stored[CREATED_KEY]}


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


def test_nothing_is_stored_for_a_visitor_who_stores_nothing(
    example: App, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    for path in ("/", "/get", "/no-such-page", "/logout"):
        assert client.get(path).cookies == []
    assert tokens(db) == []


def test_the_session_expires(example: App, db: psycopg.Connection[Any]) -> None:
    client = example.client()
    token = issued_token(client.get("/put"))
    # The store's expiry, driven from the table: the row's time is up.
    db.execute("UPDATE sessions SET expiry = now() - interval '1 second'")
    reply = client.get("/get", cookie=f"session={token}")
    assert (reply.status, reply.body.strip()) == (200, "")
    reply = client.get("/put", cookie=f"session={token}")
    assert issued_token(reply) != token
    live = db.execute("SELECT token FROM sessions WHERE expiry > now()").fetchall()
    assert live == [(PREFIX + issued_token(reply),)]


def test_the_cookie_and_the_row_last_the_lifetime(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    example = serve(lifetime=dt.timedelta(minutes=10))
    [header] = example.client().get("/put").cookies
    assert re.search(r"Max-Age=(599|600);", header)  # the row's expiry, in whole seconds
    [(_, _, expiry)] = table_rows(db)
    left = expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=9) < left <= dt.timedelta(minutes=10)


def test_renew_on_login_keeps_the_data_and_kills_the_old_token(
    example: App, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    client.get("/put")
    old = client.token()
    assert client.get("/login").status == 200
    new = client.token()
    assert new is not None
    assert old is not None
    assert new != old
    assert tokens(db) == [new]
    assert client.get("/get").body.strip() == MESSAGE
    assert client.get("/get", cookie=f"session={old}").body.strip() == ""


def test_logout_deletes_the_row_and_expires_the_cookie(
    example: App, db: psycopg.Connection[Any]
) -> None:
    client = example.client()
    client.get("/put")
    token = client.token()
    reply = client.get("/logout")
    assert reply.status == 200
    assert tokens(db) == []
    [header] = reply.cookies
    assert header.startswith("session=")
    assert "Max-Age=0" in header
    assert client.token() is None
    assert client.get("/get", cookie=f"session={token}").body.strip() == ""


@pytest.mark.parametrize(
    "value", ["garbage", "x" * 5000, '"quoted"', "A" * 42 + "!", "null", "0" * 64]
)
def test_a_tampered_cookie_is_a_new_session(
    example: App, db: psycopg.Connection[Any], value: str
) -> None:
    client = example.client()
    got = client.get("/get", cookie=f"session={value}")
    assert (got.status, got.body.strip()) == (200, "")
    issued = issued_token(client.get("/put", cookie=f"session={value}"))
    assert TOKEN_RE.fullmatch(issued)
    assert tokens(db) == [issued]


def test_an_unknown_token_is_never_adopted(example: App, db: psycopg.Connection[Any]) -> None:
    """Session fixation: a token planted in the victim's browser must not become theirs."""
    planted = new_token()
    client = example.client()
    for path in ("/get", "/put", "/login"):
        reply = client.get(path, cookie=f"session={planted}")
        assert reply.status == 200
        assert all(planted not in header for header in reply.cookies)
    assert planted not in tokens(db)
    assert len(tokens(db)) == 2  # /put's session, and /login's (each a fresh token)


def test_litestars_own_backend_adopts_the_planted_id_and_this_one_does_not(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """The difference this backend makes, on the same store."""

    @get("/put")
    async def put(request: Request[Any, Any, Any]) -> str:
        request.session["message"] = MESSAGE
        return "ok"

    planted = new_token()
    # This backend first: Litestar's leaves the planted row behind.
    for config, adopted in ((SessionConfig(), False), (ServerSideSessionConfig(), True)):
        root = PostgresStore.from_dsn(sessionstore_dsn, cleanup=NoCleanup())
        app = Litestar(
            [put],
            stores={"sessions": root.with_namespace("sessions")},
            middleware=[config.middleware],
        )
        server, thread, url = run_uvicorn(app)
        try:
            reply = Client(url).get("/put", cookie=f"session={planted}")
        finally:
            stop_uvicorn(server, thread)
        assert reply.status == 200
        assert (planted in tokens(db)) is adopted
        assert (issued_token(reply) == planted) is adopted


def test_a_due_renewal_of_a_session_deleted_meanwhile_does_not_bring_it_back(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    def configure(app: Litestar) -> None:
        @get("/read-while-deleted")
        async def read_while_deleted(request: Request[Any, Any, Any]) -> str:
            message = str(request.session["message"])
            # What "log out everywhere" on another device does meanwhile.
            with psycopg.connect(db.info.dsn, autocommit=True) as other:
                other.execute("DELETE FROM sessions")
            return message

        app.register(read_while_deleted)

    example = serve(configure, renew_after=0)
    client = example.client()
    client.get("/put")
    reply = client.get("/read-while-deleted")
    assert (reply.status, reply.body) == (200, MESSAGE)
    assert tokens(db) == []
    [header] = reply.cookies
    assert "Max-Age=0" in header


def test_a_read_renews_only_when_due_and_never_rewrites_the_data(
    example: App, db: psycopg.Connection[Any]
) -> None:
    """Renewal is a touch: the expiry moves, the data stays as stored, the cookie is re-sent."""
    client = example.client()
    client.get("/put")
    [(_, before, _)] = table_rows(db)
    assert client.get("/get").cookies == []  # just written: not due
    db.execute("UPDATE sessions SET expiry = now() + interval '1 minute'")  # due now
    reply = client.get("/get")
    assert reply.body.strip() == MESSAGE
    [header] = reply.cookies
    assert re.search(r"Max-Age=(86399|86400);", header)
    [(_, after, expiry)] = table_rows(db)
    assert bytes(after) == bytes(before)
    assert expiry - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)


def test_the_cookie_is_secure_by_default_except_on_localhost(example: App) -> None:
    assert "secure" not in example.client().get("/put").cookies[0].lower()
    remote = httpx.get(example.url + "/put", headers={"Host": "app.example"})
    [header] = remote.headers.get_list("set-cookie")
    parts = {part.strip().lower() for part in header.split(";")}
    assert {"httponly", "samesite=lax", "secure"} <= parts


def test_the_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="renew_after"):
        SessionConfig(renew_after=2)
    with pytest.raises(ValueError, match="lifetime"):
        SessionConfig(absolute_max_age=0)
    with pytest.raises(ImproperlyConfiguredException, match="max_age"):
        SessionConfig(max_age=0)
    with pytest.raises(ValueError, match="rotate_every must be positive"):
        SessionConfig(rotate_every=0)
    with pytest.raises(TypeError, match="rotate_every must be a timedelta"):
        SessionConfig(rotate_every="1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_grace must be shorter than idle_timeout"):
        SessionConfig(max_age=60, rotate_every=600, rotate_grace=60)
    with pytest.raises(ValueError, match="rotate_grace must be positive"):
        SessionConfig(rotate_grace=-1)
    manager = SessionConfig(rotate_every=900).manager
    assert (manager.rotate_every, manager.record_devices) == (dt.timedelta(minutes=15), False)


# --------------------------------------------------------------------------- headers


def test_vary_and_cache_control_as_scs_sends_them(serve: Callable[..., App]) -> None:
    def configure(app: Litestar) -> None:
        @get("/put-cached")
        async def put_cached(request: Request[Any, Any, Any]) -> Response[str]:
            request.session["message"] = "cached"  # a change: the cookie is set
            return Response("ok", headers={"Vary": "Accept-Encoding", "Cache-Control": "private"})

        @get("/vary-cookie")
        async def vary_cookie(request: Request[Any, Any, Any]) -> Response[str]:
            return Response("ok", headers={"Vary": "cookie"})

        app.register(put_cached)
        app.register(vary_cookie)

    example = serve(configure)
    with httpx.Client(base_url=example.url) as client:
        reply = client.get("/put")  # sets the cookie
        assert reply.headers.get_list("vary") == ["Cookie"]
        assert reply.headers.get_list("cache-control") == ['no-cache="Set-Cookie"']
        reply = client.get("/put-cached")  # merged into the handler's own values
        assert reply.headers.get_list("vary") == ["Accept-Encoding, Cookie"]
        assert reply.headers.get_list("cache-control") == ['private, no-cache="Set-Cookie"']
        reply = client.get("/vary-cookie")  # never twice
        assert reply.headers.get_list("vary") == ["cookie"]
        reply = client.get("/logout")  # clears the cookie
        assert reply.headers.get_list("vary") == ["Cookie"]
        assert reply.headers.get_list("cache-control") == ['no-cache="Set-Cookie"']
        reply = client.get("/get")  # used the session, set no cookie
        assert "set-cookie" not in reply.headers
        assert reply.headers.get_list("vary") == ["Cookie"]
        assert "cache-control" not in reply.headers


# --------------------------------------------------------------------------- the session contract


def contract_routes(app: Litestar) -> None:
    """Add the session contract's routes (see `_session_contract`) to the app."""
    gates = Gates()

    @get("/c/set")
    async def set_key(request: Request[Any, Any, Any]) -> str:
        key, value, group, n, hold = params(dict(request.query_params.items()))
        request.session.get(key)  # loaded (by the middleware) before the gate
        await gates.await_(group, n, hold)
        request.session[key] = value
        return "ok"

    @get("/c/get")
    async def get_data(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return {k: v for k, v in request.session.items() if not k.startswith("_")}

    @get("/c/logout")
    async def logout(request: Request[Any, Any, Any]) -> str:
        request.clear_session()
        return "ok"

    @get("/c/arrived")
    async def arrived(request: Request[Any, Any, Any]) -> str:
        return str(gates.arrived(request.query_params["group"]))

    @get("/c/release")
    async def release(request: Request[Any, Any, Any]) -> str:
        gates.release(request.query_params["hold"])
        return "ok"

    @get("/c/login")
    async def login(request: Request[Any, Any, Any]) -> str:
        login_session(request, request.query_params["user"])
        return "ok"

    @get("/c/sessions")
    async def sessions(request: Request[Any, Any, Any]) -> str:
        return json.dumps(contract.as_json(await user_sessions(request)))

    @get("/c/revoke")
    async def revoke_one(request: Request[Any, Any, Any]) -> str:
        return json.dumps(await revoke(request, request.query_params["id"]))

    @get("/c/fresh")
    async def fresh(request: Request[Any, Any, Any]) -> str:
        return json.dumps(signed_in_within(request, float(request.query_params["within"])))

    handlers = (set_key, get_data, logout, arrived, release, login, sessions, revoke_one, fresh)
    for handler in handlers:
        app.register(handler)


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
    app = serve(
        contract_routes,
        lifetime=dt.timedelta(seconds=60),
        rotate_every=dt.timedelta(seconds=contract.ROTATE_EVERY),
        rotate_grace=dt.timedelta(seconds=contract.ROTATE_GRACE),
        record_devices=True,
        max_sessions_per_owner=contract.CAP,
    )
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
    assert SessionConfig().record_devices is False  # the example turns it on: off here
    served = contract.Served(serve(contract_routes, record_devices=False).url, "session")
    contract.check_devices_are_not_recorded_by_default(served, db)


def test_a_listing_holds_only_its_namespace(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    """The owner's rows of another namespace (another app on the table) are not listed."""
    served = contract.Served(serve(contract_routes).url, "session")
    token = contract.logged_in(served, "ann", "Laptop/1.0")
    db.execute(
        "INSERT INTO sessions (token, data, expiry, owner) "
        "SELECT 'other:' || token, data, expiry, owner FROM sessions"
    )
    [listed] = contract.listing(served, token)
    assert listed["current"]
    other = session_id("other:" + PREFIX + token)
    assert served.get("/c/revoke?id=" + other, token).body == "false"
    assert served.get("/c/revoke?id=" + listed["id"], token).body == "true"
    assert [row[0] for row in table_rows(db)] == ["other:" + PREFIX + token]


@pytest.mark.parametrize("source", ["example", "docs"])
def test_the_example_app_under_gunicorn_preload(
    sessionstore_dsn: str, tmp_path: Path, source: str
) -> None:
    """``module:app`` loaded before the fork: the example app, and the docs' set-up as written."""
    if source == "example":
        options: tuple[str, ...] = ("-k", UVICORN_WORKER, "sessionstore.examples.litestar_app:app")
    else:
        module = docs_set_up("integrations-litestar.md", tmp_path)
        options = ("-k", UVICORN_WORKER, "--chdir", str(tmp_path), f"{module}:app")
    with gunicorn(sessionstore_dsn, tmp_path / "gunicorn.log", *options) as url:
        for _ in range(2):  # a session per worker, most likely
            client = Client(url)
            assert client.get("/put").status == 200
            reply = client.get("/get")
            assert (reply.status, reply.body.strip()) == (200, MESSAGE)


# --------------------------------------------------------------------------- the database down


def test_the_database_down_is_a_500_and_the_session_survives(
    serve: Callable[..., App],
    sessionstore_proxy: TcpProxy,
    sessionstore_proxy_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    example = serve(dsn=sessionstore_proxy_dsn, timeout=2)  # a connection: 2 s, not 30
    client = example.client()
    client.get("/put")
    token = client.token()
    sessionstore_proxy.reset()  # every connection, open or new, is reset
    for path in ("/get", "/logout"):
        reply = client.get(path)
        assert reply.status == 500, path
        assert "Internal Server Error" in reply.body
        for leak in ("Traceback", "psycopg", "sessions"):
            assert leak not in reply.body
        assert reply.cookies == []
    sessionstore_proxy.passthrough()  # the database is back
    # The pool reconnects in the background, with backoff: wait for its connection.
    store = example.app.stores.get("sessions")
    assert isinstance(store, PostgresStore)
    pool = store.store._pool
    wait_until(lambda: pool.get_stats().get("pool_available", 0) > 0, timeout=30)
    assert client.get("/get").body.strip() == MESSAGE
    assert client.token() == token
    assert tokens(db) == [token]


# --------------------------------------------------------------------------- sessions per user


def owners(db: psycopg.Connection[Any]) -> dict[str, str | None]:
    rows = db.execute("SELECT token, owner FROM sessions").fetchall()
    return {key.removeprefix(PREFIX): owner for key, owner in rows}


#: A line of the example's /sessions: "  <id>  ...  expires <iso>[  (this one)]".
LINE_RE = re.compile(
    r"  (?P<id>[A-Za-z0-9_-]{22})  .*  expires (?P<expires>\S+)(?P<this>  \(this one\))?"
)


def listed_sessions(reply: Reply, *secrets: str) -> dict[str, tuple[str, bool]]:
    """The example's /sessions page: each listed id's expiry and whether it is this one.

    None of `secrets` (tokens, stored keys), nor a prefix of one, is on the page.
    """
    for secret in secrets:
        assert secret[:8] not in reply.body
    lines = {}
    for line in listed(reply):
        match = LINE_RE.fullmatch(line)
        assert match, line
        lines[match["id"]] = (match["expires"], bool(match["this"]))
    return lines


def test_two_devices_log_out_everywhere(example: App, db: psycopg.Connection[Any]) -> None:
    laptop, phone = example.client(), example.client()
    for device in (laptop, phone):
        device.get("/put")
        device.get("/login")
    mine, theirs = laptop.token(), phone.token()
    assert mine is not None
    assert theirs is not None
    assert owners(db) == {mine: USER, theirs: USER}
    for device, own in ((laptop, mine), (phone, theirs)):
        expiries = {key.removeprefix(PREFIX): expiry for key, _, expiry in table_rows(db)}
        lines = listed_sessions(device.get("/sessions"), mine, theirs, PREFIX + mine)
        [this] = [expires for expires, current in lines.values() if current]
        assert len(lines) == 2
        assert this == expiries[own].astimezone(dt.UTC).isoformat(timespec="seconds")
    reply = laptop.get("/logout-everywhere")
    assert (reply.status, reply.body) == (200, "Logged out 1 other session(s); this one stays.\n")
    assert owners(db) == {mine: USER}
    assert laptop.get("/get").body.strip() == MESSAGE
    assert phone.get("/sessions").status == 403
    assert phone.get("/get").body.strip() == ""
    assert owners(db) == {mine: USER}


def test_a_device_is_revoked_by_its_listed_id(example: App) -> None:
    check_a_device_is_revoked_by_its_listed_id(example)


def test_with_hashed_tokens_the_table_holds_no_token(
    serve: Callable[..., App], db: psycopg.Connection[Any]
) -> None:
    example = serve(hash_tokens=True)
    laptop, phone = example.client(), example.client()
    for device in (laptop, phone):
        device.get("/login")
    token = laptop.token()
    assert token is not None
    keys = [row[0] for row in table_rows(db)]
    assert hash_token(PREFIX + token) in keys
    assert all(token not in key for key in keys)
    lines = listed_sessions(laptop.get("/sessions"), token, *keys)
    assert sorted(current for _, current in lines.values()) == [False, True]
    assert "Logged out 1 other" in laptop.get("/logout-everywhere").body
    assert phone.get("/sessions").status == 403


def test_the_helpers_need_the_middleware() -> None:
    @get("/")
    async def index(request: Request[Any, Any, Any]) -> str:
        for helper in (renew_token, session_owner):
            with pytest.raises(RuntimeError, match="SessionConfig"):
                helper(request)
        with pytest.raises(TypeError, match="str"):
            login_session(request, 42)  # type: ignore[arg-type]
        return "checked"

    server, thread, url = run_uvicorn(Litestar([index]))
    try:
        assert Client(url).get("/").body == "checked"
    finally:
        stop_uvicorn(server, thread)


def test_the_session_store_must_be_a_postgres_store() -> None:
    @get("/")
    async def index() -> str:
        return "never"

    app = Litestar([index], middleware=[SessionConfig().middleware])  # a MemoryStore
    server, thread, url = run_uvicorn(app)
    try:
        assert Client(url).get("/").status == 500
    finally:
        stop_uvicorn(server, thread)


# --------------------------------------------------------------------------- other store users


def test_the_response_cache_and_rate_limiting_use_the_store(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    counter = itertools.count(1)

    @get("/cached", cache=60)
    async def cached() -> str:
        return f"computed {next(counter)}"

    root = PostgresStore.from_dsn(sessionstore_dsn, cleanup=NoCleanup())
    stores: dict[str, Store] = {
        name: root.with_namespace(name) for name in ("response_cache", "rate_limit")
    }
    app = Litestar(
        [cached],
        stores=stores,
        response_cache_config=ResponseCacheConfig(),
        middleware=[RateLimitConfig(rate_limit=("minute", 3)).middleware],
    )
    server, thread, url = run_uvicorn(app)
    try:
        client = Client(url)
        assert [client.get("/cached").body for _ in range(3)] == ["computed 1"] * 3
        assert client.get("/cached").status == 429  # the fourth in a minute
    finally:
        stop_uvicorn(server, thread)
    keys = [row[0] for row in table_rows(db)]
    assert any(key.startswith("litestar/response_cache:") for key in keys)
    assert any(key.startswith("litestar/rate_limit:") for key in keys)
    assert root.store._pool.closed  # closed with the app


# --------------------------------------------------------------------------- the store itself


@pytest.fixture
async def pstore(async_session_store: AsyncStore) -> PostgresStore:
    return PostgresStore(async_session_store)


async def test_store_set_get_delete_and_bytes(pstore: PostgresStore) -> None:
    assert await pstore.get("k") is None
    await pstore.set("k", "välue", expires_in=60)
    assert await pstore.get("k") == "välue".encode()
    await pstore.set("k", b"\x00raw", expires_in=dt.timedelta(seconds=60))
    assert await pstore.get("k") == b"\x00raw"
    assert await pstore.exists("k")
    await pstore.delete("k")
    await pstore.delete("k")  # a missing key is no error
    assert not await pstore.exists("k")


async def test_store_expiries(pstore: PostgresStore, db: psycopg.Connection[Any]) -> None:
    await pstore.set("forever", b"x")
    await pstore.set("zero", b"x", expires_in=0)  # Litestar's stores: 0 is no expiry too
    await pstore.set("soon", b"x", expires_in=100)
    assert await pstore.expires_in("forever") is None
    assert await pstore.expires_in("zero") is None
    assert 98 <= (await pstore.expires_in("soon") or 0) <= 100
    assert await pstore.expires_in("missing") is None
    rows = {key: expiry for key, _, expiry in table_rows(db)}
    assert rows["litestar:forever"] == NO_EXPIRY
    # renew_for moves a set expiry, and leaves "no expiry" alone.
    assert await pstore.get("soon", renew_for=1000) == b"x"
    assert 998 <= (await pstore.expires_in("soon") or 0) <= 1000
    assert await pstore.get("forever", renew_for=dt.timedelta(seconds=5)) == b"x"
    assert await pstore.expires_in("forever") is None
    db.execute("UPDATE sessions SET expiry = now() - interval '1 second' WHERE token LIKE '%soon'")
    assert await pstore.get("soon") is None
    assert await pstore.get("soon", renew_for=60) is None  # never revived
    assert not await pstore.exists("soon")


async def test_store_namespaces_and_delete_all(
    pstore: PostgresStore, db: psycopg.Connection[Any]
) -> None:
    sessions, cache = pstore.with_namespace("sessions"), pstore.with_namespace("cache")
    nested = sessions.with_namespace("inner")
    for store in (pstore, sessions, cache, nested):
        await store.set("k", (store.namespace or "").encode(), expires_in=60)
    assert await sessions.get("k") == b"litestar/sessions"
    assert await nested.get("k") == b"litestar/sessions/inner"
    other = PostgresStore(pstore.store, namespace="litestarX")
    await other.set("k", b"other")
    await sessions.delete_all()  # itself and what is nested in it
    assert await sessions.get("k") is None
    assert await nested.get("k") is None
    assert await cache.get("k") == b"litestar/cache"
    assert await pstore.get("k") == b"litestar"
    await pstore.delete_all()
    assert sorted(row[0] for row in table_rows(db)) == ["litestarX:k"]


async def test_store_without_namespace_or_with_hashing_refuses_delete_all(
    async_session_store: AsyncStore, sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    plain = PostgresStore(async_session_store, namespace=None)
    await plain.set("k", b"x")
    assert [row[0] for row in table_rows(db)] == ["k"]
    with pytest.raises(ImproperlyConfiguredException, match="namespace"):
        await plain.delete_all()
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=1, kwargs={"autocommit": True}
    ) as pool:
        hashed = PostgresStore(AsyncStore(pool, hash_tokens=True, cleanup=NoCleanup()))
        await hashed.set("k", b"hashed", expires_in=60)
        assert await hashed.get("k") == b"hashed"
        assert hash_token("litestar:k") in [row[0] for row in table_rows(db)]
        with pytest.raises(ImproperlyConfiguredException, match="hash_tokens=False"):
            await hashed.delete_all()
    assert len(table_rows(db)) == 2


async def test_store_bad_arguments(pstore: PostgresStore, db: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError, match="AsyncStore"):
        PostgresStore(object())  # type: ignore[arg-type]
    for namespace in ("", "a:b", "a/b"):
        with pytest.raises(ValueError, match="namespace"):
            PostgresStore(pstore.store, namespace=namespace)
        with pytest.raises(ValueError, match="namespace"):
            pstore.with_namespace(namespace)
    with pytest.raises(TypeError, match="key"):
        await pstore.get(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value"):
        await pstore.set("k", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        await pstore.set("k", b"x", expires_in=-1)
    with pytest.raises(TypeError, match="expires_in"):
        await pstore.set("k", b"x", expires_in=True)
    with pytest.raises(ValueError, match="NUL"):
        await pstore.set("a\x00", b"x")
    assert table_rows(db) == []


async def test_from_dsn_connects_only_when_entered(sessionstore_dsn: str) -> None:
    root = PostgresStore.from_dsn(sessionstore_dsn, cleanup=NoCleanup())
    child = root.with_namespace("child")
    assert root.store._pool.closed  # nothing opened at construction
    async with root:
        async with child:
            await child.set("k", b"x")
        assert not root.store._pool.closed  # the root still holds it
        assert await root.with_namespace("child").get("k") == b"x"
    assert root.store._pool.closed


def test_litestar_is_imported_only_by_the_integration() -> None:
    code = (
        "import sys, sessionstore, sessionstore.integrations, sessionstore.cli\n"
        "assert 'litestar' not in sys.modules\n"
        "sys.modules['litestar'] = None\n"
        "try:\n"
        "    import sessionstore.integrations.litestar\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert 'pip install "sessionstore[litestar]"' in out
