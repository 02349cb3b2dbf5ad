"""The SCS README's example in Starlette (or FastAPI): sessions in PostgreSQL.

    pip install "sessionstore[starlette,testing]" uvicorn
    python -m sessionstore.examples.starlette_app

Then open http://127.0.0.1:4000/put and http://127.0.0.1:4000/get. The server is the one
named by ``$SESSIONSTORE_DSN``, or else a throw-away PostgreSQL started for the run (the
``testing`` extra brings its binaries) and deleted on Ctrl-C.

Beyond the Go example's ``/put`` and ``/get``: ``/login`` renews the session's token
(what a real login does after checking the password) and ``/logout`` deletes the
session.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
from starsessions import SessionAutoloadMiddleware, SessionMiddleware

from sessionstore import AsyncStore
from sessionstore.integrations.starlette import PostgresStore, renew_token
from sessionstore.testing import ephemeral_postgres

HOST, PORT = "127.0.0.1", 4000
#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"


def create_app(
    pool: AsyncConnectionPool[Any],
    *,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
    table: str = "sessions",
    schema: str | None = None,
) -> Starlette:
    """Build the app: ``/put``, ``/get``, ``/login`` and ``/logout`` on `pool`.

    The app's lifespan opens `pool` (an async pool must be opened in the loop that
    serves it), creates the table if missing and runs the store's cleanup task.

    Args:
        pool: The pool for the store, not opened yet (``open=False``).
        lifetime: How long a session lives (SCS's ``Lifetime``).
        table: The sessions table.
        schema: The table's schema, or None for the search_path.

    Returns:
        The Starlette app.
    """
    store = AsyncStore(pool, table=table, schema=schema)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with pool, store:  # open the pool and start the cleanup task
            await store.create_table()
            yield

    async def index(request: Request) -> PlainTextResponse:
        return PlainTextResponse("/put /get /login /logout\n")

    async def put(request: Request) -> PlainTextResponse:
        request.session["message"] = MESSAGE
        return PlainTextResponse("Stored a message in your session.\n")

    async def get(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("message", "")) + "\n")

    async def login(request: Request) -> PlainTextResponse:
        await renew_token(request)  # new token, same data: the old token is worthless
        request.session["user"] = "alice"
        return PlainTextResponse("Logged in; your session has a new token.\n")

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
            Route("/logout", logout),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=PostgresStore(store),
                lifetime=lifetime,  # like SCS's Lifetime: a cookie that outlives the browser
                cookie_https_only=False,  # plain http://127.0.0.1 here; keep True behind HTTPS
            ),
            Middleware(SessionAutoloadMiddleware),
        ],
    )


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    # uvicorn stops gracefully on either signal, then raises it again: turn that into
    # exceptions that unwind the with-block, so PostgreSQL is stopped and deleted.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt), ephemeral_postgres() as server:
        print(f"PostgreSQL: {server.source}")
        pool = AsyncConnectionPool(server.dsn, open=False, kwargs={"autocommit": True})
        uvicorn.run(create_app(pool), host=HOST, port=PORT)


if __name__ == "__main__":
    main()
