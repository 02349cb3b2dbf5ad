"""Server-side Quart sessions in PostgreSQL: a ``SessionInterface`` on `AsyncStore`.

The Flask integration (`sessionstore.integrations.flask`) on Quart: the same session
class, settings, cookie and headers, on the same `sessionstore.manager.SessionManager`
(see docs/integrations-quart.md). Quart's session API is asynchronous only at its
edges, so the session is read when the request starts (if its cookie holds a token),
a read failure is raised where the view first uses the session (through Quart's error
handling), `user_sessions`, `revoke` and `logout_everywhere` are coroutines, and after a
websocket (no cookie to set) a new or renewed session is not saved.
"""

from __future__ import annotations

import datetime as dt
import logging

from ..errors import DatabaseError
from ._common import UserSession, missing_extra

try:
    import quart
    from quart.sessions import SessionInterface, SessionMixin
    from quart.wrappers import BaseRequestWebsocket
    from werkzeug.sansio.response import Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "quart", exc) from exc

from .._core import validate_owner
from ..manager import Loaded, SessionManager, Steps, arun
from ..store_async import AsyncStore
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


class PostgresSessionInterface(SessionInterface, ServerSideInterface[AsyncStore]):
    """Quart's session interface, with the sessions stored through an `AsyncStore`.

    Set it as ``app.session_interface``; open the store's pool in the loop that
    serves the app (``before_serving``), in each process. It takes the options of
    the Flask integration's ``PostgresSessionInterface`` (``session_only_ttl``,
    ``serializer``, ``lifetime``, ``renew_after``, ``rotate_every``,
    ``rotate_grace``, ``record_devices``, ``secure``, ``samesite``) and its
    ``app.config`` keys.

    Raises:
        TypeError: If `store` is not an `AsyncStore`, or a setting has the wrong type.
        ValueError: If a duration is not positive, `renew_after` not in [0, 1], or
            `rotate_grace` not shorter than the idle timeout.
    """

    _logger = logger
    _store_type = AsyncStore

    async def open_session(
        self, app: quart.Quart, request: BaseRequestWebsocket
    ) -> ServerSideSession:
        """Return the request's session, read from the store; a failure is raised on use."""
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
        """Save the session and set or delete its cookie (none after a websocket).

        Raises:
            TypeError, ValueError: If the data does not serialise or is too large.
            sessionstore.DatabaseError: If the store failed.
        """
        request = quart.request if quart.has_request_context() else quart.websocket
        steps = self._save(app, session, response, request)
        if steps is not None:
            outcome = await arun(steps, self.store)
            assert isinstance(session, ServerSideSession)
            self._respond(app, session, response, outcome, request)


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    if not (quart.has_request_context() or quart.has_websocket_context()):
        return current(caller, False, None, None, PostgresSessionInterface)
    interface = quart.current_app.session_interface
    return current(caller, True, interface, quart.session, PostgresSessionInterface)


def renew_token() -> None:
    """Save the current request's session under a new token, deleting the old row.

    Raises:
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    _current("renew_token")[1].renew_token()


def login_session(owner: str) -> None:
    """Log the current request's session in as `owner`: a new token, the row owned.

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


async def user_sessions() -> list[UserSession]:
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
    manager = interface.manager(quart.current_app)
    # The token once the owner is known: the session is loaded then.
    steps: Steps[list[UserSession]]
    steps = for_owner(session, [], lambda owner: manager.sessions(owner, live_token(session)))
    return await arun(steps, interface.store)


async def logout_everywhere() -> int:
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
    return await arun(steps, interface.store)


async def revoke(session_id: str) -> bool:
    """End one of the current session's owner's sessions, by its `UserSession.id`.

    As the Flask integration's `revoke`: whether it was one of the owner's.

    Raises:
        TypeError: If `session_id` is not a str.
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("revoke")
    steps = for_owner(session, False, lambda owner: SessionManager.revoke(owner, session_id))
    return await arun(steps, interface.store)


def signed_in_within(within: dt.timedelta | float) -> bool:
    """Whether the current session's user signed in (`login_session`) within `within`.

    Raises:
        TypeError: If `within` is neither a timedelta nor a number of seconds.
        ValueError: If `within` is not positive.
        RuntimeError: Outside a request, or with another session interface.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    interface, session = _current("signed_in_within")
    return interface.manager(quart.current_app).signed_in_within(session, within)
