"""The SCS README's example in aiohttp: sessions in PostgreSQL through sessionstore.

    pip install "sessionstore[aiohttp,testing]"
    python -m sessionstore.examples.aiohttp_app

Then open http://127.0.0.1:4000/put and /get (on ``$SESSIONSTORE_DSN``, or a throw-away
PostgreSQL; aiohttp's own server serves it); ``/`` lists the routes of login and sessions
per user. A server of your own loads `app` (docs/integrations-aiohttp.md).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from sessionstore.integrations.aiohttp import (
    PostgresStorage,
    UserSession,
    login_session,
    logout_everywhere,
    session_owner,
    setup,
    user_sessions,
)
from sessionstore.testing import ephemeral_postgres

HOST, PORT = "127.0.0.1", 4000
#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"
#: Who ``/login`` logs in (a real app checks a password first).
USER = "alice"
#: Where the app keeps its storage (its ``store`` is the `AsyncStore`).
STORAGE = web.AppKey("sessionstore_storage", PostgresStorage)


def create_app(
    dsn: str,
    *,
    idle_timeout: dt.timedelta | float = dt.timedelta(hours=24),
    lifetime: dt.timedelta | float | None = None,
    renew_after: float = 0.1,
    storage_options: dict[str, Any] | None = None,
    timeout: float = 30.0,
    **store_options: Any,
) -> web.Application:
    """The app, its sessions in PostgreSQL at `dsn` (its table made at startup).

    `idle_timeout` and `lifetime` are SCS's ``IdleTimeout`` and ``Lifetime`` (the
    storage's ``max_age`` and ``lifetime``); `storage_options` go to `PostgresStorage`,
    `timeout` to the pool, `store_options` (``table``, ...) to the `AsyncStore`.
    """
    routes = web.RouteTableDef()

    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        return web.Response(text="/put /get /login /sessions /logout-everywhere /logout\n")

    @routes.get("/put")
    async def put(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["message"] = MESSAGE
        return web.Response(text="Stored a message in your session.\n")

    @routes.get("/get")
    async def get(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=str(session.get("message", "")) + "\n")

    @routes.get("/login")
    async def login(request: web.Request) -> web.Response:
        await login_session(request, USER)  # new token, same data, owned by USER
        return web.Response(text=f"Logged in as {USER}; your session has a new token.\n")

    @routes.get("/sessions")
    async def sessions(request: web.Request) -> web.Response:
        owner = await session_owner(request)
        if owner is None:
            return web.Response(text="Not logged in: /login first.\n", status=403)
        lines = [f"Sessions of {owner}:", *map(listed, await user_sessions(request))]
        return web.Response(text="\n".join(lines) + "\n")

    @routes.get("/logout-everywhere")
    async def logout_all(request: web.Request) -> web.Response:
        if await session_owner(request) is None:
            return web.Response(text="Not logged in: /login first.\n", status=403)
        ended = await logout_everywhere(request)  # every other session; this one stays
        return web.Response(text=f"Logged out {ended} other session(s); this one stays.\n")

    @routes.get("/logout")
    async def logout(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()  # the row and the cookie are deleted
        return web.Response(text="Logged out; your session is gone.\n")

    if isinstance(idle_timeout, dt.timedelta):
        idle_timeout = idle_timeout.total_seconds()
    app = web.Application()
    storage = setup(
        app,
        dsn,
        max_size=4,
        timeout=timeout,
        store_options={"owners": True, **store_options},
        max_age=int(idle_timeout),
        lifetime=lifetime,
        renew_after=renew_after,
        **(storage_options or {}),
    )

    async def create_table(app: web.Application) -> AsyncIterator[None]:
        await storage.store.create_table()  # after setup's context opened the pool
        yield

    app.cleanup_ctx.append(create_table)
    app[STORAGE] = storage
    app.add_routes(routes)
    return app


def listed(each: UserSession) -> str:
    """One line of ``/sessions``: the session's id (never a token), times and device."""
    device = f"  {each.user_agent or '?'} at {each.ip or '?'}" if each.ip or each.user_agent else ""
    created = "?" if each.created is None else each.created.isoformat(timespec="seconds")
    return (
        f"  {each.id}  created {created}"
        f"  last seen {each.last_seen.isoformat(timespec='seconds')}{device}"
        f"  expires {each.expiry.isoformat(timespec='seconds')}"
        + ("  (this one)" if each.current else "")
    )


def __getattr__(name: str) -> Any:
    # Made on first access, not at import: importing the module needs no DSN.
    if name == "app":
        app = create_app(os.environ["SESSIONSTORE_DSN"])
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    # run_app stops on either signal and closes the pool; then PostgreSQL is deleted.
    with ephemeral_postgres() as server:
        print(f"PostgreSQL: {server.source}")
        web.run_app(create_app(server.dsn), host=HOST, port=PORT)


if __name__ == "__main__":
    main()
