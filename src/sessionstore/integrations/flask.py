"""Server-side Flask sessions in PostgreSQL: a ``SessionInterface`` on `Store`.

Install with ``pip install "sessionstore[flask]"``, then::

    from flask import Flask
    from psycopg_pool import ConnectionPool

    from sessionstore import Store
    from sessionstore.integrations.flask import PostgresSessionInterface

    pool = ConnectionPool(dsn, open=False, kwargs={"autocommit": True})
    store = Store(pool)
    app = Flask(__name__)
    app.session_interface = PostgresSessionInterface(store)


    @app.before_request
    def open_pool():
        pool.open()  # in each process, after any fork (gunicorn --preload); then a no-op

The cookie holds only a random token; the data lives in the sessions table. The
session's life is the `sessionstore.manager.SessionManager`'s: concurrent requests
merge per key, a session logged out stays logged out, an idle timeout
(``PERMANENT_SESSION_LIFETIME``) and an absolute lifetime
(``SESSION_ABSOLUTE_LIFETIME``) both end it, and an unchanged session is written only
when its renewal is due (``SESSION_RENEW_AFTER``). See docs/integrations-flask.md.
The data is serialised with Flask's tagged JSON, never pickled. With Flask-Login
installed, ``login_user`` gives the session a new token, as `login_session` does.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from typing import Any

from ._common import DEFAULT_SESSION_ONLY_TTL, UserSession, missing_extra

try:
    import flask
    from flask.sessions import SessionInterface, SessionMixin
    from flask.wrappers import Request, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "flask", exc) from exc

from .._core import validate_owner
from ..manager import DEFAULT_RENEW_AFTER, Loaded, SessionManager, run
from ..store import Store
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
    """Flask's session interface, with the sessions stored through a `Store`.

    Set it as ``app.session_interface``. The store (and its pool) is the
    application's to open and close.

    Timeouts: a permanent session (``session.permanent = True``) ends
    ``PERMANENT_SESSION_LIFETIME`` after its last request, any other
    `session_only_ttl` after it (its cookie lasts until the browser closes), and
    either ends `lifetime` after it was created. An unchanged session's expiry (and
    cookie) is moved only once `renew_after` of the idle timeout has passed since the
    last move; with ``SESSION_REFRESH_EACH_REQUEST = False`` never. ``app.config``'s
    ``SESSION_ABSOLUTE_LIFETIME`` and ``SESSION_RENEW_AFTER`` override the keywords.

    Args:
        store: The store to keep sessions in.
        session_only_ttl: The idle timeout of a non-permanent session: a
            `datetime.timedelta` or seconds (default 24 hours).
        serializer: Turns the session's dict into text and back (``dumps`` and
            ``loads``). Default: Flask's tagged JSON. Data that does not load back
            as a dict is treated as no session (and logged).
        lifetime: The absolute lifetime: a timedelta, seconds, or None for none.
        renew_after: The share of the idle timeout (0 to 1) after which an
            unchanged session is renewed; 0 renews on every request.
        secure: Whether the cookie is ``Secure`` when ``SESSION_COOKIE_SECURE``
            is false: None (default) for yes except on localhost and loopback
            hosts, False for never (an app served over plain HTTP).
        samesite: The cookie's ``SameSite`` when ``SESSION_COOKIE_SAMESITE`` is
            unset (default ``"Lax"``; None sends none).

    Raises:
        TypeError: If `store` is not a `Store`, or a duration has the wrong type.
        ValueError: If a duration is not positive or `renew_after` not in [0, 1].
    """

    _logger = logger

    def __init__(
        self,
        store: Store,
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
            Store,
            session_only_ttl=session_only_ttl,
            serializer=serializer,
            lifetime=lifetime,
            renew_after=renew_after,
            secure=secure,
            samesite=samesite,
        )
        try:
            signals: Any = importlib.import_module("flask_login.signals")
        except ImportError:
            pass
        else:
            signals.user_logged_in.connect(_renew_on_login)

    def open_session(self, app: flask.Flask, request: Request) -> ServerSideSession:
        """Return the request's session; nothing is read from the store yet.

        Args:
            app: The application.
            request: The request.

        Returns:
            The session, which reads its data when first used.
        """
        cookie = request.cookies.get(self.get_cookie_name(app))
        manager = self.manager(app)

        def load() -> Loaded:
            return self._loaded(run(manager.load(cookie), self.store))

        return self.session_class(load, manager.token_of(cookie), had_cookie=cookie is not None)

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
            sessionstore.manager.ConcurrentUpdateError: If other requests kept writing the
                session throughout the save.
            sessionstore.DatabaseError: If the store failed.
        """
        steps = self._save(app, session, response)
        if steps is not None:
            outcome = run(steps, self.store)
            assert isinstance(session, ServerSideSession)
            self._respond(app, session, response, outcome, flask.request.host)


def _renew_on_login(sender: flask.Flask, **extra: Any) -> None:
    """Flask-Login's ``user_logged_in``: a new token at every login (session fixation)."""
    if isinstance(sender.session_interface, PostgresSessionInterface):
        session = flask.session
        if isinstance(session, ServerSideSession):
            session.renew_token()


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    if not flask.has_request_context():
        return current(caller, False, None, None, PostgresSessionInterface)
    interface = flask.current_app.session_interface
    return current(caller, True, interface, flask.session, PostgresSessionInterface)


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

    At the end of the request the session is saved under a fresh token as
    `owner`'s, so `user_sessions` lists it and `logout_everywhere` can end it (needs
    a store with ``owners=True``)::

        @app.post("/login")
        def login():
            user = authenticate(request.form["name"], request.form["password"])
            login_session(str(user.id))

    The owner is kept in the session's data (under ``"_session_owner"``);
    ``session.clear()`` (logout) drops it with everything else.

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


def user_sessions() -> list[UserSession]:
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
    manager = interface.manager(flask.current_app)
    return run(manager.sessions(owner, live_token(session)), interface.store)


def logout_everywhere() -> int:
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
    return run(SessionManager.log_out_everywhere(owner, live_token(session)), interface.store)
