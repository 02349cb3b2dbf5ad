"""The SCS README's example in Litestar: sessions in PostgreSQL through sessionstore.

    pip install "sessionstore[litestar,testing]"
    python -m sessionstore.examples.litestar_app

Then open http://127.0.0.1:4000/put and /get (on ``$SESSIONSTORE_DSN``, or a throw-away
PostgreSQL; uvicorn serves it); ``/`` lists the routes of login and sessions per user.
A server of your own loads `app` (docs/integrations-litestar.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, get

from sessionstore.integrations.litestar import (
    PostgresStore,
    SessionConfig,
    UserSession,
    login_session,
    logout_everywhere,
    revoke,
    session_owner,
    user_sessions,
)
from sessionstore.manager import DEFAULT_ROTATE_GRACE

HOST, PORT = "127.0.0.1", 4000
#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"
#: Who ``/login`` logs in (a real app checks a password first).
USER = "alice"

_Request = Request[Any, Any, Any]


def _text(body: str, status_code: int = 200) -> Response[str]:
    return Response(body, status_code=status_code, media_type="text/plain")


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
    dsn: str,
    *,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
    absolute_lifetime: dt.timedelta | None = dt.timedelta(days=7),
    renew_after: float = 0.1,
    rotate_every: dt.timedelta | None = None,
    rotate_grace: dt.timedelta = DEFAULT_ROTATE_GRACE,
    record_devices: bool = True,  # for /sessions (personal data: off by default)
    **store_options: Any,
) -> Litestar:
    """The app, its sessions in PostgreSQL at `dsn` (the pool opens at startup).

    `lifetime` and `absolute_lifetime` are SCS's ``IdleTimeout`` and ``Lifetime``; the
    other options are `SessionConfig`'s, `store_options` (``table``, ...) the `AsyncStore`'s.
    """

    @get("/")
    async def index() -> Response[str]:
        return _text("/put /get /login /sessions /revoke /logout-everywhere /logout\n")

    @get("/put")
    async def put(request: _Request) -> Response[str]:
        request.session["message"] = MESSAGE
        return _text("Stored a message in your session.\n")

    @get("/get")
    async def get_message(request: _Request) -> Response[str]:
        return _text(str(request.session.get("message", "")) + "\n")

    @get("/login")
    async def login(request: _Request) -> Response[str]:
        login_session(request, USER)  # new token, same data, owned by USER
        return _text(f"Logged in as {USER}; your session has a new token.\n")

    @get("/sessions")
    async def sessions(request: _Request) -> Response[str]:
        owner = session_owner(request)
        if owner is None:
            return _text("Not logged in: /login first.\n", 403)
        lines = [f"Sessions of {owner}:", *map(session_line, await user_sessions(request))]
        return _text("\n".join(lines) + "\n")

    @get("/revoke")
    async def revoke_one(request: _Request) -> Response[str]:
        # Only the user's own sessions: another user's id ends nothing.
        if await revoke(request, request.query_params.get("id", "")):
            return _text("Ended that session.\n")
        return _text("No such session of yours.\n", 404)

    @get("/logout-everywhere")
    async def logout_all(request: _Request) -> Response[str]:
        if session_owner(request) is None:
            return _text("Not logged in: /login first.\n", 403)
        ended = await logout_everywhere(request)  # every other session; this one stays
        return _text(f"Logged out {ended} other session(s); this one stays.\n")

    @get("/logout")
    async def logout(request: _Request) -> Response[str]:
        request.clear_session()  # the row and the cookie are deleted
        return _text("Logged out; your session is gone.\n")

    absolute = None if absolute_lifetime is None else int(absolute_lifetime.total_seconds())
    root = PostgresStore.from_dsn(dsn, owners=True, min_size=1, max_size=4, **store_options)

    async def create_table() -> None:
        await root.store.create_table()  # on_startup runs after the stores were entered

    return Litestar(
        route_handlers=[index, put, get_message, login, sessions, revoke_one, logout_all, logout],
        stores={"sessions": root.with_namespace("sessions")},
        on_startup=[create_table],
        middleware=[
            SessionConfig(
                max_age=int(lifetime.total_seconds()),  # the idle timeout
                absolute_max_age=absolute,  # the lifetime, however busy
                renew_after=renew_after,
                rotate_every=rotate_every,
                rotate_grace=rotate_grace,
                record_devices=record_devices,
                # Secure unless served as localhost: leave secure unset.
            ).middleware
        ],
        debug=False,
    )


#: What a server loads as ``sessionstore.examples.litestar_app:app``.
app = create_app(os.environ.get("SESSIONSTORE_DSN", ""))


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    from sessionstore.testing import ephemeral_postgres  # the testing extra: only here

    # uvicorn stops on either signal, then raises it again: unwind, deleting PostgreSQL.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt), ephemeral_postgres() as server:
        print(f"PostgreSQL: {server.source}")
        uvicorn.run(create_app(server.dsn), host=HOST, port=PORT)


if __name__ == "__main__":
    main()
