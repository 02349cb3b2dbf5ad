"""The SCS README's example in Quart: sessions in PostgreSQL through sessionstore.

    pip install "sessionstore[quart,testing]"
    python -m sessionstore.examples.quart_app

Then open http://127.0.0.1:4000/put and /get (on ``$SESSIONSTORE_DSN``, or a throw-away
PostgreSQL; Hypercorn serves it); ``/`` lists the routes of login and sessions per user.
A server of your own loads `app` (docs/integrations-quart.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from psycopg_pool import AsyncConnectionPool
from quart import Quart, request, session

from sessionstore import AsyncStore
from sessionstore.integrations.quart import (
    PostgresSessionInterface,
    login_session,
    logout_everywhere,
    revoke,
    session_owner,
    user_sessions,
)
from sessionstore.testing import ephemeral_postgres

HOST, PORT = "127.0.0.1", 4000
#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"
#: Who ``/login`` logs in (a real app checks a password first).
USER = "alice"
#: ``/sessions`` is text the clients wrote (their user agents): never served as HTML.
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def when(moment: dt.datetime | None) -> str:
    """A moment as ``/sessions`` shows it: ISO 8601, to the second."""
    return "?" if moment is None else moment.isoformat(timespec="seconds")


def create_app(
    pool: AsyncConnectionPool[Any],
    *,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
    table: str = "sessions",
    schema: str | None = None,
) -> Quart:
    """The app on `pool` (``open=False``: an async pool opens in the loop that serves it)."""
    store = AsyncStore(pool, table=table, schema=schema, owners=True)
    app = Quart(__name__)
    app.config["PERMANENT_SESSION_LIFETIME"] = lifetime  # like SCS's Lifetime
    # For /sessions (personal data, so off by default; behind a proxy, see the docs).
    app.config["SESSION_RECORD_DEVICES"] = True
    # Quart's stubs type the attribute as its cookie interface, not as SessionInterface.
    app.session_interface = PostgresSessionInterface(store)  # type: ignore[assignment]

    @app.before_serving
    async def open_store() -> None:
        await pool.open(wait=True)
        await store.open()  # starts the cleanup task
        await store.create_table()

    @app.after_serving
    async def close_store() -> None:
        try:
            await store.aclose()
        finally:
            await pool.close()

    @app.get("/")
    async def index() -> str:
        return "/put /get /login /sessions /revoke?id= /logout-everywhere /logout\n"

    @app.get("/put")
    async def put() -> str:
        session.permanent = True  # a cookie that outlives the browser, as SCS's
        session["message"] = MESSAGE
        return "Stored a message in your session.\n"

    @app.get("/get")
    async def get() -> str:
        return str(session.get("message", "")) + "\n"

    @app.get("/login")
    async def login() -> str:
        login_session(USER)  # new token, same data, owned by USER: the old token is dead
        return f"Logged in as {USER}; your session has a new token.\n"

    @app.get("/sessions")
    async def sessions() -> tuple[str, int, dict[str, str]]:
        owner = session_owner()
        if owner is None:
            return "Not logged in: /login first.\n", 403, TEXT
        lines = [f"Sessions of {owner}:"]
        for each in await user_sessions():
            device = f"{each.user_agent or '?'} at {each.ip or '?'}"
            lines.append(
                f"  {each.id}  created {when(each.created)}  last seen {when(each.last_seen)}"
                f"  {device}  expires {when(each.expiry)}{'  (this one)' if each.current else ''}"
            )
        return "\n".join(lines) + "\n", 200, TEXT

    @app.get("/revoke")
    async def revoke_view() -> tuple[str, int]:
        # Only the user's own sessions: another user's id ends nothing.
        if await revoke(request.args.get("id", "")):
            return "Ended that session.\n", 200
        return "No such session of yours.\n", 404

    @app.get("/logout-everywhere")
    async def logout_everywhere_view() -> tuple[str, int]:
        if session_owner() is None:
            return "Not logged in: /login first.\n", 403
        ended = await logout_everywhere()  # every other session of the user; this one stays
        return f"Logged out {ended} other session(s); this one stays.\n", 200

    @app.get("/logout")
    async def logout() -> str:
        session.clear()  # the row and the cookie are deleted
        return "Logged out; your session is gone.\n"

    return app


def __getattr__(name: str) -> Any:
    # Made on first access, not at import: importing the module makes no pool.
    if name == "app":
        dsn = os.environ.get("SESSIONSTORE_DSN")
        if not dsn:
            raise RuntimeError("no DSN: set $SESSIONSTORE_DSN")
        pool = AsyncConnectionPool(dsn, open=False, kwargs={"autocommit": True})
        app = create_app(pool)
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def _serve(app: Quart) -> None:
    """Serve with hypercorn until SIGINT or SIGTERM; then it finishes and stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = Config()
    config.bind = [f"{HOST}:{PORT}"]
    await serve(app, config, shutdown_trigger=stop.wait)


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    with ephemeral_postgres() as server:
        print(f"PostgreSQL: {server.source}")
        pool = AsyncConnectionPool(server.dsn, open=False, kwargs={"autocommit": True})
        asyncio.run(_serve(create_app(pool)))


if __name__ == "__main__":
    main()
