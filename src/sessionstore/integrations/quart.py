"""Server-side Quart sessions in PostgreSQL: a ``SessionInterface`` on `AsyncStore`.

Install with ``pip install "sessionstore[quart]"``, then::

    from psycopg_pool import AsyncConnectionPool
    from quart import Quart

    from sessionstore import AsyncStore
    from sessionstore.integrations.quart import PostgresSessionInterface

    pool = AsyncConnectionPool(dsn, open=False, kwargs={"autocommit": True})
    store = AsyncStore(pool)
    app = Quart(__name__)
    app.session_interface = PostgresSessionInterface(store)


    @app.before_serving
    async def open_store():  # in each process, in the loop that serves it
        await pool.open()
        await store.open()


    @app.after_serving
    async def close_store():
        await store.aclose()
        await pool.close()

It is the Flask integration (`sessionstore.integrations.flask`) on Quart: the same
session class, settings, cookie and headers, on the same
`sessionstore.manager.SessionManager`. What differs comes from Quart's session API
being asynchronous only at its edges (``open_session`` and ``save_session``):

- The session is read when the request starts, if its cookie holds a token; a
  request without one costs no query. A view that never touches ``quart.session``
  still writes nothing, sets no cookie and gets no ``Vary``.
- A database failure while reading is raised where the view first uses the session,
  so Quart's error handling answers 500, and a view that never uses it is served.
- `user_sessions` and `logout_everywhere` query the store: they are coroutines.
- After a websocket (no response), a session that keeps its token is saved and an
  emptied one deleted; a new or renewed one is not, as no cookie can carry its token.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from ..errors import DatabaseError
from ._common import DEFAULT_SESSION_ONLY_TTL, UserSession, missing_extra

try:
    import quart
    from quart.sessions import SessionInterface, SessionMixin
    from quart.wrappers import BaseRequestWebsocket
    from werkzeug.sansio.response import Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "quart", exc) from exc

from .._core import validate_owner
from ..manager import DEFAULT_RENEW_AFTER, Loaded, SessionManager, arun
from ..store_async import AsyncStore
from ._session_interface import (
    ServerSideInterface,
    ServerSideSession,
    current,
    live_token,
    log_in,
)

__all__ = [
    "PostgresSessionInterface",
    "ServerSideSession",
    "UserSession",
    "login_session",
    "logout_everywhere",
    "renew_token",
    "session_owner",
    "user_sessions",
]

logger = logging.getLogger(__name__)


class PostgresSessionInterface(SessionInterface, ServerSideInterface):
    """Quart's session interface, with the sessions stored through an `AsyncStore`.

    Set it as ``app.session_interface``. The store and its pool are the
    application's to open and close, in the loop that serves the app (Quart's
    ``before_serving`` and ``after_serving``). Settings, timeouts and cookie
    defaults are the Flask integration's (see its ``PostgresSessionInterface``).

    Args:
        store: The store to keep sessions in.
        session_only_ttl: The idle timeout of a non-permanent session: a
            `datetime.timedelta` or seconds (default 24 hours).
        serializer: Turns the session's dict into text and back (``dumps`` and
            ``loads``). Default: Flask's tagged JSON.
        lifetime: The absolute lifetime: a timedelta, seconds, or None for none.
        renew_after: The share of the idle timeout (0 to 1) after which an
            unchanged session is renewed; 0 renews on every request.
        secure: Whether the cookie is ``Secure`` when ``SESSION_COOKIE_SECURE``
            is false: None (default) for yes except on localhost and loopback
            hosts, False for never.
        samesite: The cookie's ``SameSite`` when ``SESSION_COOKIE_SAMESITE`` is
            unset (default ``"Lax"``; None sends none).

    Raises:
        TypeError: If `store` is not an `AsyncStore`, or a duration has the wrong type.
        ValueError: If a duration is not positive or `renew_after` not in [0, 1].
    """

    _logger = logger

    def __init__(
        self,
        store: AsyncStore,
        *,
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
        serializer: Any = None,
        lifetime: dt.timedelta | float | None = None,
        renew_after: float = DEFAULT_RENEW_AFTER,
        secure: bool | None = None,
        samesite: str | None = "Lax",
    ) -> None:
        self.store = self._configure(
            store,
            AsyncStore,
            session_only_ttl=session_only_ttl,
            serializer=serializer,
            lifetime=lifetime,
            renew_after=renew_after,
            secure=secure,
            samesite=samesite,
        )

    async def open_session(
        self, app: quart.Quart, request: BaseRequestWebsocket
    ) -> ServerSideSession:
        """Return the request's session, its data read from the store.

        Args:
            app: The application.
            request: The request (or websocket).

        Returns:
            The session. If the store failed, using it raises that failure.
        """
        cookie = request.cookies.get(self.get_cookie_name(app))
        manager = self.manager(app)
        token = manager.token_of(cookie)
        try:
            loaded = self._loaded(await arun(manager.load(cookie), self.store))
        except DatabaseError as exc:
            # Quart opens the session before its error handling starts: raised here,
            # the failure would skip the app's error handlers and its 500 page.
            # Raised where the view uses the session, it goes through them.
            error = exc

            def failed() -> Loaded:
                raise error

            return self.session_class(failed, token, had_cookie=True)
        return self.session_class(lambda: loaded, token, had_cookie=cookie is not None)

    async def save_session(
        self, app: quart.Quart, session: SessionMixin, response: Response | None
    ) -> None:
        """Save the session and set (or delete) its cookie, if the request used it.

        Args:
            app: The application.
            session: The session `open_session` returned.
            response: The response, to set the cookie on; None after a websocket.

        Raises:
            TypeError: If `session` is not a `ServerSideSession`, or holds data the
                serializer cannot encode.
            ValueError: If the encoded session is larger than the store's
                ``max_data_size``.
            sessionstore.manager.ConcurrentUpdateError: If other requests kept
                writing the session throughout the save.
            sessionstore.DatabaseError: If the store failed.
        """
        steps = self._save(app, session, response)
        if steps is not None:
            outcome = await arun(steps, self.store)
            assert isinstance(session, ServerSideSession)
            host = quart.request.host if quart.has_request_context() else None
            self._respond(app, session, response, outcome, host)


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    if not (quart.has_request_context() or quart.has_websocket_context()):
        return current(caller, False, None, None, PostgresSessionInterface)
    interface = quart.current_app.session_interface
    return current(caller, True, interface, quart.session, PostgresSessionInterface)


def renew_token() -> None:
    """Give the current request's session a new token, keeping its data.

    At the end of the request the session is saved under a fresh token, the old
    token's row is deleted and the new cookie is sent. Call it on login and on any
    change of privilege (session fixation defence); `login_session` does.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    _current("renew_token")[1].renew_token()


def login_session(owner: str) -> None:
    """Log the current request's session in as `owner`: new token, owned by the user.

    As the Flask integration's `login_session`: saved under a fresh token as
    `owner`'s session, so `user_sessions` lists it and `logout_everywhere` can end
    it. Needs a store with ``owners=True``.

    Args:
        owner: Who the session belongs to: the user id, as text.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    validate_owner(owner)  # before the request check: a bad owner is the caller's bug
    log_in(_current("login_session")[1], owner)


def session_owner() -> str | None:
    """The user the current request's session belongs to (set by `login_session`).

    Returns:
        The owner, or None for a session nobody logged in.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    return _current("session_owner")[1].owner


async def user_sessions() -> list[UserSession]:
    """List the live sessions of the current session's owner ("where am I logged in").

    Returns:
        The sessions, soonest to expire first, the current one marked `current`;
            empty if the session belongs to nobody.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("user_sessions")
    owner = session.owner
    if owner is None:
        return []
    manager = interface.manager(quart.current_app)
    return await arun(manager.sessions(owner, live_token(session)), interface.store)


async def logout_everywhere() -> int:
    """End every other session of the current session's owner, at once.

    The current session stays logged in; to end it as well, call
    ``session.clear()`` after this. Needs a store with ``owners=True``.

    Returns:
        How many sessions were deleted; 0 if the session belongs to nobody.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("logout_everywhere")
    owner = session.owner
    if owner is None:
        return 0
    steps = SessionManager.log_out_everywhere(owner, live_token(session))
    return await arun(steps, interface.store)
