"""The Flask integration on Quart and `AsyncStore`: see docs/integrations-quart.md."""

from __future__ import annotations

import datetime as dt
import logging

from ..errors import DatabaseError
from ._common import missing_extra

try:
    import quart
    from quart.sessions import SessionInterface, SessionMixin
    from quart.wrappers import BaseRequestWebsocket
    from werkzeug.sansio.response import Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "quart", exc) from exc

from .._core import validate_owner
from ..manager import Loaded, SessionManager, UserSession, arun
from ..store_async import AsyncStore
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


class PostgresSessionInterface(SessionInterface, ServerSideInterface[AsyncStore]):
    """Quart's session interface on an `AsyncStore`, for ``app.session_interface``.

    It takes the Flask one's keywords and ``app.config`` keys; a bad one (or `store`)
    raises TypeError or ValueError.
    """

    _logger = logging.getLogger(__name__)
    _store_type = AsyncStore

    async def open_session(
        self, app: quart.Quart, request: BaseRequestWebsocket
    ) -> ServerSideSession:
        """Return the request's session, read from the store; a failure is raised on use."""
        cookie = request.cookies.get(self.get_cookie_name(app))
        manager = self.manager(app)
        token = manager.token_of(cookie)
        try:
            loaded = await arun(manager.load(cookie), self.store)
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
        """Save the session and set or delete its cookie (none after a websocket)."""
        request = quart.request if quart.has_request_context() else quart.websocket
        steps = self._save(app, session, response, request)
        if steps is not None:
            outcome = await arun(steps, self.store)
            assert isinstance(session, ServerSideSession)
            self._respond(app, session, response, outcome, request)


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    active = quart.has_request_context() or quart.has_websocket_context()
    return current(caller, active, quart, PostgresSessionInterface)


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


async def user_sessions() -> list[UserSession]:
    """`SessionManager.sessions` for the current session's owner."""
    interface, session = _current("user_sessions")
    manager = interface.manager(quart.current_app)
    return await arun(manager.sessions(session.owner, live_token(session)), interface.store)


async def logout_everywhere() -> int:
    """`SessionManager.log_out_everywhere` for the current session's owner, but this one."""
    interface, session = _current("logout_everywhere")
    steps = SessionManager.log_out_everywhere(session.owner, live_token(session))
    return await arun(steps, interface.store)


async def revoke(session_id: str) -> bool:
    """`SessionManager.revoke` for the current session's owner."""
    interface, session = _current("revoke")
    return await arun(SessionManager.revoke(session.owner, session_id), interface.store)


def signed_in_within(within: dt.timedelta | float) -> bool:
    """`SessionManager.signed_in_within` for the current session."""
    interface, session = _current("signed_in_within")
    return interface.manager(quart.current_app).signed_in_within(session, within)
