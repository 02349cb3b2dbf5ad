"""The SCS README's example in Flask: sessions in PostgreSQL through sessionstore.

    pip install "sessionstore[flask,testing]"
    python -m sessionstore.examples.flask_app

Then open http://127.0.0.1:4000/put and http://127.0.0.1:4000/get. The server is the one
named by ``$SESSIONSTORE_DSN``, or else a throw-away PostgreSQL started for the run (the
``testing`` extra brings its binaries) and deleted on Ctrl-C.

Beyond the Go example's ``/put`` and ``/get``: ``/login`` renews the session's token
(what a real login does after checking the password) and ``/logout`` deletes the
session.
"""

from __future__ import annotations

import datetime as dt
import signal
import sys

from flask import Flask, session
from psycopg_pool import ConnectionPool

from sessionstore import Store
from sessionstore.integrations.flask import PostgresSessionInterface, renew_token
from sessionstore.testing import ephemeral_postgres

HOST, PORT = "127.0.0.1", 4000
#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"


def create_app(store: Store, *, lifetime: dt.timedelta = dt.timedelta(hours=24)) -> Flask:
    """Build the app: ``/put``, ``/get``, ``/login`` and ``/logout`` on `store`.

    Args:
        store: The store for the sessions.
        lifetime: How long a session lives (SCS's ``Lifetime``).

    Returns:
        The Flask app.
    """
    app = Flask(__name__)
    app.config["PERMANENT_SESSION_LIFETIME"] = lifetime  # like SCS's Lifetime
    app.session_interface = PostgresSessionInterface(store)

    @app.get("/")
    def index() -> str:
        return "/put /get /login /logout\n"

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
        renew_token()  # new token, same data: the old token is worthless now
        session["user"] = "alice"
        return "Logged in; your session has a new token.\n"

    @app.get("/logout")
    def logout() -> str:
        session.clear()  # the row and the cookie are deleted
        return "Logged out; your session is gone.\n"

    return app


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    # Let `kill` unwind the with-blocks too, so PostgreSQL is stopped and deleted.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with (
        ephemeral_postgres() as server,
        ConnectionPool(server.dsn, kwargs={"autocommit": True}) as pool,
        Store(pool) as store,
    ):
        store.create_table()
        print(f"PostgreSQL: {server.source}")
        create_app(store).run(host=HOST, port=PORT)


if __name__ == "__main__":
    main()
