"""Server-side Flask sessions in PostgreSQL on `Store`: see docs/integrations-flask.md."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from typing import Any

from ._common import missing_extra

try:
    import flask
    from flask.sessions import SessionInterface, SessionMixin
    from flask.wrappers import Request, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "flask", exc) from exc

from .._core import validate_owner
from ..manager import OWNER_KEY, SIGNED_IN_KEY, Loaded, SessionManager, UserSession, run
from ..store import Store
from ._session_interface import ServerSideInterface, ServerSideSession, current, live_token, log_in

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


class PostgresSessionInterface(SessionInterface, ServerSideInterface[Store]):
    """Flask's session interface on a `Store`, for ``app.session_interface``.

    Its keywords, and the ``app.config`` keys that override them, are in
    docs/integrations-flask.md; a bad one (or `store`) raises TypeError or ValueError.
    """

    _logger = logging.getLogger(__name__)
    _store_type = Store

    def open_session(self, app: flask.Flask, request: Request) -> ServerSideSession:
        """Return the request's session, which reads the store when first used."""
        cookie = request.cookies.get(self.get_cookie_name(app))
        manager = self.manager(app)

        def load() -> Loaded:
            return run(manager.load(cookie), self.store)

        return self.session_class(load, manager.token_of(cookie), had_cookie=cookie is not None)

    def save_session(self, app: flask.Flask, session: SessionMixin, response: Response) -> None:
        """Save the session and set or delete its cookie, if the request used it."""
        steps = self._save(app, session, response, flask.request)
        if steps is not None:
            outcome = run(steps, self.store)
            assert isinstance(session, ServerSideSession)
            self._respond(app, session, response, outcome, flask.request)


def _flask_login_session(app: flask.Flask) -> ServerSideSession | None:
    """The request's session, if `app` keeps it through this integration."""
    session, ours = flask.session, isinstance(app.session_interface, PostgresSessionInterface)
    return session if ours and isinstance(session, ServerSideSession) else None


def _on_login(sender: flask.Flask, **extra: Any) -> None:
    """Flask-Login's ``user_logged_in``: `login_session` for the user id it stored."""
    session = _flask_login_session(sender)
    if session is not None:
        log_in(session, str(session["_user_id"]))


def _on_logout(sender: flask.Flask, **extra: Any) -> None:
    """Flask-Login's ``user_logged_out``: the session is nobody's, under a new token."""
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
    return current(caller, flask.has_request_context(), flask, PostgresSessionInterface)


def renew_token() -> None:
    """Save the current request's session under a new token, deleting the old row."""
    _current("renew_token")[1].renew_token()


def login_session(owner: str) -> None:
    """`SessionManager.log_in` for the current request's session, under a new token."""
    validate_owner(owner)  # before the request check: a bad owner is the caller's bug
    log_in(_current("login_session")[1], owner)


def session_owner() -> str | None:
    """The user the current request's session belongs to, or None."""
    return _current("session_owner")[1].owner


def user_sessions() -> list[UserSession]:
    """`SessionManager.sessions` for the current session's owner."""
    interface, session = _current("user_sessions")
    manager = interface.manager(flask.current_app)
    return run(manager.sessions(session.owner, live_token(session)), interface.store)


def logout_everywhere() -> int:
    """`SessionManager.log_out_everywhere` for the current session's owner, but this one."""
    interface, session = _current("logout_everywhere")
    steps = SessionManager.log_out_everywhere(session.owner, live_token(session))
    return run(steps, interface.store)


def revoke(session_id: str) -> bool:
    """`SessionManager.revoke` for the current session's owner."""
    interface, session = _current("revoke")
    return run(SessionManager.revoke(session.owner, session_id), interface.store)


def signed_in_within(within: dt.timedelta | float) -> bool:
    """`SessionManager.signed_in_within` for the current session."""
    interface, session = _current("signed_in_within")
    return interface.manager(flask.current_app).signed_in_within(session, within)
