"""Server-side Flask sessions in PostgreSQL: a ``SessionInterface`` on `Store`.

Install with ``pip install "sessionstore[flask]"`` and set
``app.session_interface = PostgresSessionInterface(store)``; docs/integrations-flask.md
has the set-up (a pool opened per process, after any fork), settings and guarantees.
The session's life is the `sessionstore.manager.SessionManager`'s: concurrent requests
merge per key, a logout stays logged out, idle timeout and absolute lifetime, renewal
only when due. With Flask-Login installed, ``login_user`` renews the token.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ._common import UserSession, missing_extra

try:
    import flask
    from flask.sessions import SessionInterface, SessionMixin
    from flask.wrappers import Request, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "flask", exc) from exc

from .._core import validate_owner
from ..manager import Loaded, SessionManager, run
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


class PostgresSessionInterface(SessionInterface, ServerSideInterface[Store]):
    """Flask's session interface, with the sessions stored through a `Store`.

    Set it as ``app.session_interface``. The store (and its pool) is the
    application's to open and close.

    A permanent session's idle timeout is ``PERMANENT_SESSION_LIFETIME``; the
    ``app.config`` keys ``SESSION_ABSOLUTE_LIFETIME`` and ``SESSION_RENEW_AFTER``
    override `lifetime` and `renew_after`.

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
    _store_type = Store

    def open_session(self, app: flask.Flask, request: Request) -> ServerSideSession:
        """Return the request's session, which reads the store when first used."""
        cookie = request.cookies.get(self.get_cookie_name(app))
        manager = self.manager(app)

        def load() -> Loaded:
            return self._loaded(run(manager.load(cookie), self.store))

        return self.session_class(load, manager.token_of(cookie), had_cookie=cookie is not None)

    def save_session(self, app: flask.Flask, session: SessionMixin, response: Response) -> None:
        """Save the session and set or delete its cookie, if the request used it.

        Raises:
            TypeError, ValueError: If the data does not serialise or is too large.
            sessionstore.ConcurrentUpdateError: If other requests kept
                writing the session throughout the save.
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


try:
    _login_signals: Any = importlib.import_module("flask_login.signals")
except ImportError:
    pass
else:
    _login_signals.user_logged_in.connect(_renew_on_login)


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    if not flask.has_request_context():
        return current(caller, False, None, None, PostgresSessionInterface)
    interface = flask.current_app.session_interface
    return current(caller, True, interface, flask.session, PostgresSessionInterface)


def renew_token() -> None:
    """Save the current request's session under a new token, deleting the old row.

    Call it on login and any change of privilege, as SCS's ``RenewToken``: a token
    planted or seen before (session fixation) is worthless afterwards.

    Raises:
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    _current("renew_token")[1].renew_token()


def login_session(owner: str) -> None:
    """Log the current request's session in as `owner`: a new token, the row owned.

    `user_sessions` then lists it and `logout_everywhere` can end it (needs a store
    with ``owners=True``). The owner is kept in the data (``"_session_owner"``), so
    ``session.clear()`` at logout drops it.

    Args:
        owner: Who the session belongs to: the user id, as text.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    validate_owner(owner)  # before the request check: a bad owner is the caller's bug
    log_in(_current("login_session")[1], owner)


def session_owner() -> str | None:
    """The user the current request's session belongs to, or None.

    Raises:
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    return _current("session_owner")[1].owner


def user_sessions() -> list[UserSession]:
    """The live sessions of the current session's owner, soonest to expire first.

    Returns:
        The sessions, this request's marked `current`; empty for a session nobody
            logged in. Show users only a prefix of each `UserSession.key`.

    Raises:
        RuntimeError: Outside a request, or with another session interface.
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
    """End every other session of the current session's owner; this one stays.

    Returns:
        How many were ended; 0 for a session nobody logged in.

    Raises:
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("logout_everywhere")
    owner = session.owner
    if owner is None:
        return 0
    return run(SessionManager.log_out_everywhere(owner, live_token(session)), interface.store)
