"""The SCS README's example in Starlette (or FastAPI): sessions in PostgreSQL.

    pip install "sessionstore[starlette,testing]" uvicorn
    python -m sessionstore.examples.starlette_app

Then open http://127.0.0.1:4000/put and /get (on ``$SESSIONSTORE_DSN``, or a throw-away
PostgreSQL); ``/`` lists the routes of login and sessions per user. A server of your own
loads `app` (docs/integrations-starlette.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starsessions import SessionAutoloadMiddleware

from sessionstore import AsyncStore
from sessionstore.integrations.starlette import (
    PostgresStore,
    SessionMiddleware,  # starsessions' own, its saves decided by sessionstore's manager
    UserSession,
    login_session,
    logout_everywhere,
    revoke,
    session_owner,
    user_sessions,
)

HOST, PORT = "127.0.0.1", 4000
#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"
#: Who ``/login`` logs in (a real app checks a password first).
USER = "alice"


def session_line(each: UserSession) -> str:
    """A session's line on ``/sessions``: its id (never a token), times and device."""
    created, seen, expires = (
        "?" if t is None else t.isoformat(timespec="seconds")
        for t in (each.created, each.last_seen, each.expiry)
    )
    device = f"{each.user_agent or 'unknown browser'} at {each.ip or 'unknown address'}"
    mark = "  (this one)" if each.current else ""
    return f"  {each.id}  created {created}  last seen {seen}  {device}  expires {expires}{mark}"


def create_app(
    pool: AsyncConnectionPool[Any],
    *,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
    absolute_lifetime: dt.timedelta | None = dt.timedelta(days=7),
    renew_after: float = 0.1,
    **store_options: Any,
) -> Starlette:
    """The app on `pool` (``open=False``: an async pool opens in the loop that serves it).

    `lifetime` and `absolute_lifetime` are SCS's ``IdleTimeout`` and ``Lifetime``;
    `store_options` (``table``, ...) go to the `AsyncStore`.
    """
    store = AsyncStore(pool, owners=True, **store_options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with pool, store:  # open the pool and start the cleanup task
            await store.create_table()
            yield

    async def index(request: Request) -> PlainTextResponse:
        return PlainTextResponse("/put /get /login /sessions /revoke /logout-everywhere /logout\n")

    async def put(request: Request) -> PlainTextResponse:
        request.session["message"] = MESSAGE
        return PlainTextResponse("Stored a message in your session.\n")

    async def get(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("message", "")) + "\n")

    async def login(request: Request) -> PlainTextResponse:
        await login_session(request, USER)  # new token, same data, owned by USER
        return PlainTextResponse(f"Logged in as {USER}; your session has a new token.\n")

    async def sessions(request: Request) -> PlainTextResponse:
        owner = await session_owner(request)
        if owner is None:
            return PlainTextResponse("Not logged in: /login first.\n", status_code=403)
        lines = [f"Sessions of {owner}:", *map(session_line, await user_sessions(request))]
        return PlainTextResponse("\n".join(lines) + "\n")

    async def revoke_one(request: Request) -> PlainTextResponse:
        # Only the user's own sessions: another user's id ends nothing.
        if await revoke(request, request.query_params.get("id", "")):
            return PlainTextResponse("Ended that session.\n")
        return PlainTextResponse("No such session of yours.\n", status_code=404)

    async def logout_all(request: Request) -> PlainTextResponse:
        if await session_owner(request) is None:
            return PlainTextResponse("Not logged in: /login first.\n", status_code=403)
        ended = await logout_everywhere(request)  # every other session; this one stays
        return PlainTextResponse(f"Logged out {ended} other session(s); this one stays.\n")

    async def logout(request: Request) -> PlainTextResponse:
        request.session.clear()  # the row and the cookie are deleted
        return PlainTextResponse("Logged out; your session is gone.\n")

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", index),
            Route("/put", put),
            Route("/get", get),
            Route("/login", login),
            Route("/sessions", sessions),
            Route("/revoke", revoke_one),
            Route("/logout-everywhere", logout_all),
            Route("/logout", logout),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=PostgresStore(store),
                lifetime=lifetime,  # the idle timeout; the cookie outlives the browser
                absolute_lifetime=absolute_lifetime,
                renew_after=renew_after,
                record_devices=True,  # for /sessions (personal data: off by default)
                # Secure unless served as localhost: leave cookie_https_only unset.
            ),
            Middleware(SessionAutoloadMiddleware),
        ],
    )


#: What a server loads as ``sessionstore.examples.starlette_app:app``.
app = create_app(
    AsyncConnectionPool(
        os.environ.get("SESSIONSTORE_DSN", ""), open=False, kwargs={"autocommit": True}
    )
)


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    from sessionstore.testing import ephemeral_postgres  # the testing extra: only here

    # uvicorn stops on either signal, then raises it again: unwind, deleting PostgreSQL.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt), ephemeral_postgres() as server:
        print(f"PostgreSQL: {server.source}")
        pool = AsyncConnectionPool(server.dsn, open=False, kwargs={"autocommit": True})
        uvicorn.run(create_app(pool), host=HOST, port=PORT)


if __name__ == "__main__":
    main()
