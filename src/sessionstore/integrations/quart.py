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
    async def open_store():
        await pool.open()
        await store.open()


    @app.after_serving
    async def close_store():
        await store.aclose()
        await pool.close()

It is the Flask integration (`sessionstore.integrations.flask`) on Quart: the same
session class, cookie rules, renewal, sessions per user and SCS's headers, from one
source. What differs comes from Quart's session API being asynchronous only at its
edges (``open_session`` and ``save_session``) while ``session[...]`` is not:

- The session is read from the database when the request starts, if its cookie holds
  a token; a request without one costs no query. A view that never touches
  ``quart.session`` still writes nothing, sets no cookie and gets no ``Vary``.
- A database failure while reading is raised where the view first uses the session
  (``sessionstore.DatabaseError``), so Quart's error handling answers 500, and a view
  that never uses the session is served while the database is down.
- `user_sessions` and `logout_everywhere` query the store: they are coroutines.
- After a websocket (``save_session`` without a response), a session that keeps its
  token is saved (modified: written; read: its expiry moved) and an emptied one is
  deleted; a new or renewed one is not, as no cookie can carry its token (logged).

The data is serialised with Flask's tagged JSON (Quart's own sessions use it too),
never with pickle.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from .._core import validate_owner
from ..errors import DatabaseError
from ._common import DEFAULT_SESSION_ONLY_TTL, UserSession, missing_extra

try:
    import quart
    from quart.sessions import SessionInterface, SessionMixin
    from quart.wrappers import BaseRequestWebsocket
    from werkzeug.sansio.response import Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "quart", exc) from exc

from ..store_async import AsyncStore
from ._session_interface import (
    ServerSideInterface,
    ServerSideSession,
    arun_save,
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
    ``before_serving`` and ``after_serving``).

    Expiry works as in the Flask integration: a permanent session's row expires
    ``PERMANENT_SESSION_LIFETIME`` after its last save, as its cookie does; any
    other's `session_only_ttl` after it. With ``SESSION_REFRESH_EACH_REQUEST``
    (the default) a request that used the session moves its expiry: a modified
    session is written whole (``commit``), an unmodified one only touched
    (``touch``), so a write made meanwhile by another request is kept.

    Args:
        store: The store to keep sessions in.
        session_only_ttl: How long the row of a non-permanent session lives after
            its last save: a `datetime.timedelta` or seconds (default 24 hours).
        serializer: Turns the session's dict into text and back: any object with
            ``dumps(dict) -> str`` and ``loads(str) -> Any``. Default: Flask's
            tagged JSON. Data that does not load back as a dict is treated as no
            session (and logged).

    Raises:
        TypeError: If `store` is not an `AsyncStore`, or `session_only_ttl` is
            neither a timedelta nor a number.
        ValueError: If `session_only_ttl` is not positive.
    """

    _logger = logger

    def __init__(
        self,
        store: AsyncStore,
        *,
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
        serializer: Any = None,
    ) -> None:
        self.store = self._configure(store, AsyncStore, session_only_ttl, serializer)

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
        token, had_cookie = self._cookie_token(app, request.cookies)
        if token is None:
            return self.session_class(None, None, had_cookie=had_cookie)
        try:
            data = self._loaded(await self.store.find(token))
        except DatabaseError as exc:
            # Quart opens the session before its error handling starts: raised here,
            # the failure would skip the app's error handlers and its 500 page.
            # Raised where the view uses the session, it goes through them.
            error = exc

            def failed(_token: str) -> dict[str, Any] | None:
                raise error

            return self.session_class(token, failed, had_cookie=True)
        return self.session_class(token, lambda _token: data, had_cookie=True)

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
            sessionstore.DatabaseError: If the store failed.
        """
        await arun_save(self._save(app, session, response), self.store)


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    if not (quart.has_request_context() or quart.has_websocket_context()):
        return current(caller, False, None, None, PostgresSessionInterface)
    interface = quart.current_app.session_interface
    return current(caller, True, interface, quart.session, PostgresSessionInterface)


def renew_token() -> None:
    """Give the current request's session a new token, keeping its data.

    At the end of the request the session is saved under a fresh token, the old
    token's row is deleted and the new cookie is sent. Call it on login (session
    fixation defence)::

        @app.post("/login")
        async def login():
            ...  # check the credentials
            renew_token()
            session["user_id"] = user.id

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    _current("renew_token")[1].renew_token()


def login_session(owner: str) -> None:
    """Log the current request's session in as `owner`: new token, owned by the user.

    As the Flask integration's `login_session`: the session gets a new token, and
    at the end of the request it is saved as `owner`'s session, so `user_sessions`
    lists it and `logout_everywhere` can end it. Needs a store with ``owners=True``.
    The owner is kept in the session's data (under ``"_session_owner"``).

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
            empty if the session belongs to nobody. Show users only a prefix of
            each `UserSession.key`.

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
    return interface._listing(await interface.store.sessions_of(owner), session)


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
    ended = await interface.store.delete_owned(owner, keep=live_token(session))
    logger.debug("logged out everywhere else: %d sessions deleted", ended)
    return ended
