"""The SCS README's example in Quart: sessions in PostgreSQL through sessionstore.

    pip install "sessionstore[quart,testing]"
    python -m sessionstore.examples.quart_app

Then open http://127.0.0.1:4000/put and http://127.0.0.1:4000/get. The server is the one
named by ``$SESSIONSTORE_DSN``, or else a throw-away PostgreSQL started for the run (the
``testing`` extra brings its binaries) and deleted on Ctrl-C. Hypercorn (which comes
with Quart) serves it.

Under a server of your own, `app` is the application, on ``$SESSIONSTORE_DSN``; each
process opens its pool when it starts serving (Quart's ``before_serving``)::

    gunicorn --preload --workers 2 -k uvicorn_worker.UvicornWorker \
        sessionstore.examples.quart_app:app

Beyond the Go example's ``/put`` and ``/get``: ``/login`` logs the session in as
"alice" (a new token, the session owned by her: what a real login does after checking
the password), ``/sessions`` lists her sessions (an opaque id, never a token; when it
began and was last seen; its device; its expiry), ``/revoke?id=ID`` ends one of them,
``/logout-everywhere`` ends all of them but this one, and ``/logout`` deletes the
session. Log in from two browsers (or two cookie jars) to see both listed.

A real app would take ``/login``, ``/logout``, ``/revoke`` and ``/logout-everywhere``
as POSTs (with CSRF protection); they are GETs here so that a browser's address bar and
curl can drive them.
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
    """Build the app: the routes `index` lists, on `pool`.

    The app opens `pool` before serving (an async pool must be opened in the loop
    that serves it), creates the table if missing (with the owner column, added if
    the table lacks it), runs the store's cleanup task, and closes both after
    serving.

    Args:
        pool: The pool for the store, not opened yet (``open=False``).
        lifetime: How long a session lives (SCS's ``Lifetime``).
        table: The sessions table.
        schema: The table's schema, or None for the search_path.

    Returns:
        The Quart app.
    """
    store = AsyncStore(pool, table=table, schema=schema, owners=True)
    app = Quart(__name__)
    app.config["PERMANENT_SESSION_LIFETIME"] = lifetime  # like SCS's Lifetime
    # For /sessions: each session's IP address and user agent (personal data: off by
    # default). Behind a proxy, set up the framework's proxy-headers support.
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
    # `gunicorn ...quart_app:app`: made on first access, not at import, so that
    # importing the module (the demo, the tests) makes no pool.
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
