"""Server-side Flask sessions in PostgreSQL: a ``SessionInterface`` on `Store`.

Install with ``pip install "sessionstore[flask]"``, then::

    from flask import Flask
    from psycopg_pool import ConnectionPool

    from sessionstore import Store
    from sessionstore.integrations.flask import PostgresSessionInterface

    pool = ConnectionPool(dsn, kwargs={"autocommit": True})
    store = Store(pool)
    app = Flask(__name__)
    app.session_interface = PostgresSessionInterface(store)

The session's data lives in the sessions table; the cookie holds only a random token
(32 bytes, url-safe base64, as SCS issues them), so no ``SECRET_KEY`` is needed for
sessions. Flask's cookie settings apply (``SESSION_COOKIE_NAME``, ``_DOMAIN``,
``_PATH``, ``_SECURE``, ``_HTTPONLY``, ``_SAMESITE``, ``_PARTITIONED``,
``PERMANENT_SESSION_LIFETIME``, ``SESSION_REFRESH_EACH_REQUEST`` and
``session.permanent``).

- The session is read from the database the first time the request uses it; a
  request that never touches ``flask.session`` costs no query and sets no cookie.
- A token the database does not know (expired, deleted, made up or tampered with) is
  never reused: the request gets a new, empty session and, once something is stored
  in it, a new token.
- An emptied session (``session.clear()``) deletes its row and its cookie.
- A request that only read the session (``SESSION_REFRESH_EACH_REQUEST``) moves the
  row's expiry with the store's ``touch``, without rewriting the data; if the session
  was deleted meanwhile (logged out elsewhere), it stays deleted.
- A new session, and a renewed one, is saved with the store's ``create`` under a fresh
  token: a token that happens to be taken is never overwritten.
- `renew_token` gives the session a new token and deletes the old row, keeping the
  data: call it on login and privilege changes (session fixation defence).
- Sessions per user (a store with ``owners=True``): `login_session` renews the token
  and makes the session the user's, `user_sessions` lists the user's sessions and
  `logout_everywhere` ends all of them but the current one.
- The data is serialised as JSON with Flask's own tagged JSON (the serializer of
  Flask's cookie sessions, which also keeps tuples, bytes, datetimes, UUIDs and
  Markup), never with pickle: nothing read from the database is ever unpickled.
- Headers as SCS sends them: every response of a request that used the session
  carries ``Vary: Cookie``, and one that sets or deletes the cookie ``Cache-Control:
  no-cache="Set-Cookie"`` (both merged into the values the view set), so no shared
  cache hands one user's page or cookie to another.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from .._core import validate_owner
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    UserSession,
    missing_extra,
)

try:
    import flask
    from flask.sessions import SessionInterface, SessionMixin
    from flask.wrappers import Request, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "flask", exc) from exc

from ..store import Store
from ._session_interface import (
    ServerSideInterface,
    ServerSideSession,
    current,
    live_token,
    log_in,
    run_save,
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
    """Flask's session interface, with the sessions stored through a `Store`.

    Set it as ``app.session_interface``. The store (and its pool) is the
    application's to close.

    Expiry of the row: a permanent session (``session.permanent = True``) expires
    ``PERMANENT_SESSION_LIFETIME`` after it was last saved, as its cookie does. Any
    other session has a cookie that lasts until the browser closes, which the server
    never learns; its row expires `session_only_ttl` after it was last saved. A loaded,
    non-empty session has its expiry moved at the end of every request when
    ``SESSION_REFRESH_EACH_REQUEST`` is true (Flask's default), so both are idle
    timeouts; set it to false for absolute ones (saved only when modified). A
    modified session is written whole (``commit``); an unmodified one only gets its
    expiry moved (``touch``), so a write made meanwhile by another request is kept.

    Args:
        store: The store to keep sessions in.
        session_only_ttl: How long the row of a non-permanent session lives after
            its last save: a `datetime.timedelta` or seconds (default 24 hours).
        serializer: Turns the session's dict into text and back: any object with
            ``dumps(dict) -> str`` and ``loads(str) -> Any``. Default: Flask's
            tagged JSON. Data that does not load back as a dict is treated as no
            session (and logged).

    Raises:
        TypeError: If `store` is not a `Store`, or `session_only_ttl` is neither
            a timedelta nor a number.
        ValueError: If `session_only_ttl` is not positive.
    """

    _logger = logger

    def __init__(
        self,
        store: Store,
        *,
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
        serializer: Any = None,
    ) -> None:
        self.store = self._configure(store, Store, session_only_ttl, serializer)

    def open_session(self, app: flask.Flask, request: Request) -> ServerSideSession:
        """Return the request's session; nothing is read from the store yet.

        Args:
            app: The application.
            request: The request.

        Returns:
            The session, which reads its data when first used.
        """
        token, had_cookie = self._cookie_token(app, request.cookies)
        return self.session_class(token, self._load, had_cookie=had_cookie)

    def save_session(self, app: flask.Flask, session: SessionMixin, response: Response) -> None:
        """Save the session and set (or delete) its cookie, if the request used it.

        Args:
            app: The application.
            session: The session `open_session` returned.
            response: The response, to set the cookie on.

        Raises:
            TypeError: If `session` is not a `ServerSideSession`, or holds data the
                serializer cannot encode.
            ValueError: If the encoded session is larger than the store's
                ``max_data_size``.
            sessionstore.DatabaseError: If the store failed.
        """
        run_save(self._save(app, session, response), self.store)

    def _load(self, token: str) -> dict[str, Any] | None:
        """Read and decode a session; None if missing, expired or undecodable."""
        return self._loaded(self.store.find(token))


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    if not flask.has_request_context():
        return current(caller, False, None, None, PostgresSessionInterface)
    interface = flask.current_app.session_interface
    return current(caller, True, interface, flask.session, PostgresSessionInterface)


def renew_token() -> None:
    """Give the current request's session a new token, keeping its data.

    At the end of the request the session is saved under a fresh token, the old
    token's row is deleted and the new cookie is sent. Call it on login (session
    fixation defence)::

        @app.post("/login")
        def login():
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

    The session gets a new token (as `renew_token`), and at the end of the request
    it is saved as `owner`'s session, so `user_sessions` lists it and
    `logout_everywhere` can end it. Needs a store with ``owners=True``::

        @app.post("/login")
        def login():
            user = authenticate(request.form["name"], request.form["password"])
            login_session(str(user.id))
            session["user_id"] = user.id

    The owner is kept in the session's data (under ``"_session_owner"``), so
    `ServerSideSession.owner` tells it on every later request and every save keeps
    the row owned. ``session.clear()`` (logout) drops it with everything else.

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

    The same as ``session.owner``, for code that sees ``flask.session`` typed as
    Flask's ``SessionMixin``.

    Returns:
        The owner, or None for a session nobody logged in.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    return _current("session_owner")[1].owner


def user_sessions() -> list[UserSession]:
    """List the live sessions of the current session's owner ("where am I logged in").

    Returns:
        The sessions, soonest to expire first, the current one marked `current`;
            empty if the session belongs to nobody (not logged in with
            `login_session`). Show users only a prefix of each `UserSession.key`.

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
    return interface._listing(interface.store.sessions_of(owner), session)


def logout_everywhere() -> int:
    """End every other session of the current session's owner, at once.

    The current session stays logged in; the others are deleted now, so their next
    request gets an empty session. To end the current one as well, call
    ``session.clear()`` after this. Needs a store with ``owners=True``::

        @app.post("/logout-everywhere")
        def logout_everywhere_view():
            ended = logout_everywhere()
            return f"Logged out {ended} other sessions."

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
    ended = interface.store.delete_owned(owner, keep=live_token(session))
    logger.debug("logged out everywhere else: %d sessions deleted", ended)
    return ended
