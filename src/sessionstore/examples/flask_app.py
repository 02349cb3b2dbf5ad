"""The SCS README's example in Flask: sessions in PostgreSQL through sessionstore.

    pip install "sessionstore[flask,testing]"
    python -m sessionstore.examples.flask_app

Then open http://127.0.0.1:4000/put and /get (on ``$SESSIONSTORE_DSN``, or a throw-away
PostgreSQL); ``/`` lists the routes of login and sessions per user. A server of your own
loads `app` (docs/integrations-flask.md).
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import signal
import sys
from typing import Any

from flask import Flask, request, session
from psycopg_pool import ConnectionPool

from sessionstore import Store
from sessionstore.integrations.flask import (
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


def create_app(store: Store, *, lifetime: dt.timedelta = dt.timedelta(hours=24)) -> Flask:
    """The app on `store` (``owners=True``); a session lives `lifetime` (SCS's ``Lifetime``)."""
    app = Flask(__name__)
    app.config["PERMANENT_SESSION_LIFETIME"] = lifetime  # like SCS's Lifetime
    # For /sessions (personal data, so off by default; behind a proxy, see the docs).
    app.config["SESSION_RECORD_DEVICES"] = True
    app.session_interface = PostgresSessionInterface(store)

    @app.before_request
    def open_pool() -> None:
        store.pool.open()  # in each process, after any fork (gunicorn --preload); then a no-op

    @app.get("/")
    def index() -> str:
        return "/put /get /login /sessions /revoke?id= /logout-everywhere /logout\n"

    @app.get("/put")
    def put() -> str:
        session.permanent = True  # a cookie that outlives the browser, as SCS's
        session["message"] = MESSAGE
        return "Stored a message in your session.\n"

    @app.get("/get")
    def get() -> str:
        return str(session.get("message", "")) + "\n"

    @app.get("/login")
    def login() -> str:
        login_session(USER)  # new token, same data, owned by USER: the old token is dead
        return f"Logged in as {USER}; your session has a new token.\n"

    @app.get("/sessions")
    def sessions() -> tuple[str, int, dict[str, str]]:
        owner = session_owner()
        if owner is None:
            return "Not logged in: /login first.\n", 403, TEXT
        lines = [f"Sessions of {owner}:"]
        for each in user_sessions():
            device = f"{each.user_agent or '?'} at {each.ip or '?'}"
            lines.append(
                f"  {each.id}  created {when(each.created)}  last seen {when(each.last_seen)}"
                f"  {device}  expires {when(each.expiry)}{'  (this one)' if each.current else ''}"
            )
        return "\n".join(lines) + "\n", 200, TEXT

    @app.get("/revoke")
    def revoke_view() -> tuple[str, int]:
        # Only the user's own sessions: another user's id ends nothing.
        if revoke(request.args.get("id", "")):
            return "Ended that session.\n", 200
        return "No such session of yours.\n", 404

    @app.get("/logout-everywhere")
    def logout_everywhere_view() -> tuple[str, int]:
        if session_owner() is None:
            return "Not logged in: /login first.\n", 403
        ended = logout_everywhere()  # every other session of the user; this one stays
        return f"Logged out {ended} other session(s); this one stays.\n", 200

    @app.get("/logout")
    def logout() -> str:
        session.clear()  # the row and the cookie are deleted
        return "Logged out; your session is gone.\n"

    return app


def __getattr__(name: str) -> Any:
    # Made on first access, not at import: importing the module makes no pool.
    if name == "app":
        dsn = os.environ.get("SESSIONSTORE_DSN")
        if not dsn:
            raise RuntimeError("no DSN: set $SESSIONSTORE_DSN")
        # Closed: each worker opens it (open_pool), and starts its own cleanup thread.
        pool = ConnectionPool(dsn, open=False, kwargs={"autocommit": True})
        store = Store(pool, owners=True)
        atexit.register(pool.close)
        atexit.register(store.close)  # runs first: atexit calls in reverse order
        app = create_app(store)
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    # Let `kill` unwind the with-blocks too, so PostgreSQL is stopped and deleted.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with (
        ephemeral_postgres() as server,
        ConnectionPool(server.dsn, kwargs={"autocommit": True}) as pool,
        Store(pool, owners=True) as store,
    ):
        store.create_table()  # with the owner column (added if the table lacks it)
        print(f"PostgreSQL: {server.source}")
        create_app(store).run(host=HOST, port=PORT)


if __name__ == "__main__":
    main()
