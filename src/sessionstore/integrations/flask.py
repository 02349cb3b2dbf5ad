"""Server-side Flask sessions in PostgreSQL: a ``SessionInterface`` on `Store`.

Install with ``pip install "sessionstore[flask]"`` and set
``app.session_interface = PostgresSessionInterface(store)``; docs/integrations-flask.md
has the set-up (a pool opened per process, after any fork), settings and guarantees.
The session's life is the `sessionstore.manager.SessionManager`'s: concurrent requests
merge per key, a logout stays logged out, idle timeout and absolute lifetime, renewal
only when due, timed token rotation. With Flask-Login installed, ``login_user`` is
`login_session` for its user id and ``logout_user`` makes the session nobody's.
"""

from __future__ import annotations

import datetime as dt
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
from ..manager import SIGNED_IN_KEY, Loaded, SessionManager, Steps, run
from ..store import Store
from ._common import OWNER_KEY
from ._session_interface import (
    ServerSideInterface,
    ServerSideSession,
    current,
    for_owner,
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
    "revoke",
    "session_owner",
    "signed_in_within",
    "user_sessions",
]

logger = logging.getLogger(__name__)


class PostgresSessionInterface(SessionInterface, ServerSideInterface[Store]):
    """Flask's session interface, with the sessions stored through a `Store`.

    Set it as ``app.session_interface``. The store (and its pool) is the
    application's to open and close.

    A permanent session's idle timeout is ``PERMANENT_SESSION_LIFETIME``; the
    ``app.config`` keys ``SESSION_ABSOLUTE_LIFETIME``, ``SESSION_RENEW_AFTER``,
    ``SESSION_ROTATE_EVERY``, ``SESSION_ROTATE_GRACE`` and ``SESSION_RECORD_DEVICES``
    override the keywords of the same meaning.

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
        rotate_every: Give an active session a new token this often: a timedelta,
            seconds, or None (default) for never.
        rotate_grace: How long the old token keeps working after a rotation
            (default 30 seconds); shorter than the idle timeout.
        record_devices: Keep the client's IP address (``request.remote_addr``) and
            user agent in the session when it gets a token, for `user_sessions`
            (default off: personal data).
        secure: Whether the cookie is ``Secure`` when ``SESSION_COOKIE_SECURE``
            is false: None (default) for yes except on localhost and loopback
            hosts, False for never (an app served over plain HTTP).
        samesite: The cookie's ``SameSite`` when ``SESSION_COOKIE_SAMESITE`` is
            unset (default ``"Lax"``; None sends none).

    Raises:
        TypeError: If `store` is not a `Store`, or a duration has the wrong type.
        ValueError: If a duration is not positive, `renew_after` not in [0, 1], or
            `rotate_grace` not shorter than the idle timeout.
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
        steps = self._save(app, session, response, flask.request)
        if steps is not None:
            outcome = run(steps, self.store)
            assert isinstance(session, ServerSideSession)
            self._respond(app, session, response, outcome, flask.request)


def _flask_login_session(app: flask.Flask) -> ServerSideSession | None:
    """The request's session, if `app` keeps it through this integration."""
    session = flask.session
    if isinstance(app.session_interface, PostgresSessionInterface):
        return session if isinstance(session, ServerSideSession) else None
    return None


def _on_login(sender: flask.Flask, **extra: Any) -> None:
    """Flask-Login's ``user_logged_in``: `login_session` for the user id it stored."""
    session = _flask_login_session(sender)
    if session is not None:
        log_in(session, str(session["_user_id"]))


def _on_logout(sender: flask.Flask, **extra: Any) -> None:
    """Flask-Login's ``user_logged_out``: the session is nobody's, under a new token.

    ``logout_user`` keeps the session's other keys; the owner and the sign-in time
    go, and the new token's row is made without the owner.
    """
    session = _flask_login_session(sender)
    if session is not None:
        session.pop(OWNER_KEY, None)
        session.pop(SIGNED_IN_KEY, None)
        session.renew_token()


try:
    _login_signals: Any = importlib.import_module("flask_login.signals")
except ImportError:
    pass
else:
    _login_signals.user_logged_in.connect(_on_login)
    _login_signals.user_logged_out.connect(_on_logout)


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
    with ``owners=True``). The owner and the sign-in time (for `signed_in_within`)
    are kept in the data, so ``session.clear()`` at logout drops them.

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
            logged in. No token is in them: `UserSession.id` names one for `revoke`.

    Raises:
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("user_sessions")
    manager = interface.manager(flask.current_app)
    # The token once the owner is known: the session is loaded then.
    steps: Steps[list[UserSession]]
    steps = for_owner(session, [], lambda owner: manager.sessions(owner, live_token(session)))
    return run(steps, interface.store)


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
    steps = for_owner(
        session, 0, lambda owner: SessionManager.log_out_everywhere(owner, live_token(session))
    )
    return run(steps, interface.store)


def revoke(session_id: str) -> bool:
    """End one of the current session's owner's sessions, by its `UserSession.id`.

    Args:
        session_id: The `UserSession.id` of a session `user_sessions` listed.

    Returns:
        Whether it was one of the owner's live sessions (and is ended now); False
        for a session nobody logged in.

    Raises:
        TypeError: If `session_id` is not a str.
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("revoke")
    steps = for_owner(session, False, lambda owner: SessionManager.revoke(owner, session_id))
    return run(steps, interface.store)


def signed_in_within(within: dt.timedelta | float) -> bool:
    """Whether the current session's user signed in (`login_session`) within `within`.

    Ask for the password again before a sensitive change when it is False.

    Args:
        within: A timedelta or seconds.

    Raises:
        TypeError: If `within` is neither a timedelta nor a number of seconds.
        ValueError: If `within` is not positive.
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    interface, session = _current("signed_in_within")
    return interface.manager(flask.current_app).signed_in_within(session, within)
