"""Starlette and FastAPI sessions in PostgreSQL, through starsessions' API.

`SessionMiddleware` is starsessions' middleware with `SessionManager` deciding every
load and save; ``request.session``, ``load_session`` and the cookie options stay
starsessions'. See docs/integrations-starlette.md.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TypeVar

from .._core import validate_owner
from ..manager import (
    CREATED_KEY,
    DEFAULT_RENEW_AFTER,
    DEFAULT_ROTATE_GRACE,
    Device,
    Loaded,
    Outcome,
    SessionManager,
    Steps,
    arun,
    secure_by_default,
)
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    UserSession,
    cache_control_with_no_cache_set_cookie,
    missing_extra,
    owner_of,
    to_timedelta,
    vary_with_cookie,
)

try:
    import starsessions
    from starlette.datastructures import MutableHeaders
    from starlette.requests import HTTPConnection
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
    from starsessions import Serializer, SessionStore
    from starsessions.middleware import LoadGuard
    from starsessions.session import SessionHandler
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "starlette", exc) from exc

from ..store_async import AsyncStore

__all__ = [
    "PostgresStore",
    "SessionMiddleware",
    "UserSession",
    "login_session",
    "logout_everywhere",
    "renew_token",
    "revoke",
    "session_owner",
    "signed_in_within",
    "user_sessions",
]

#: starsessions' metadata key, which older versions of this integration stored.
_METADATA = "__metadata__"

T = TypeVar("T")


class PostgresStore(SessionStore):
    """Where `SessionMiddleware` keeps sessions: ``store=PostgresStore(async_store)``.

    The `AsyncStore` (and its pool) is the application's to open and close, e.g. in
    its lifespan.

    Args:
        store: The store to keep sessions in.
        session_only_ttl: The idle timeout of sessions whose cookie lasts until the
            browser closes (``lifetime=0``): a `datetime.timedelta` or seconds.

    Raises:
        TypeError: If `store` is not an `AsyncStore`, or `session_only_ttl` is
            neither a timedelta nor a number.
        ValueError: If `session_only_ttl` is not positive.
    """

    def __init__(
        self,
        store: AsyncStore,
        *,
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
    ) -> None:
        if not isinstance(store, AsyncStore):
            raise TypeError(f"store must be a sessionstore.AsyncStore, not {type(store).__name__}")
        self.store = store
        self.session_only_ttl = to_timedelta(session_only_ttl, "session_only_ttl")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.store.name}>"

    # starsessions' store API, which only starsessions' own middleware calls: that one
    # would bypass the session manager, so it is refused.

    async def read(self, session_id: str, lifetime: int) -> bytes:
        """Refuse (see above)."""
        raise RuntimeError(_WRONG_MIDDLEWARE)

    async def write(self, session_id: str, data: bytes, lifetime: int, ttl: int) -> str:
        """Refuse (see above)."""
        raise RuntimeError(_WRONG_MIDDLEWARE)

    async def remove(self, session_id: str) -> None:
        """Refuse (see above)."""
        raise RuntimeError(_WRONG_MIDDLEWARE)


_WRONG_MIDDLEWARE = "PostgresStore needs sessionstore's SessionMiddleware, not starsessions' own"


class SessionMiddleware(starsessions.SessionMiddleware):
    """starsessions' ``SessionMiddleware``, its loads and saves decided by `SessionManager`.

    Same options as starsessions', plus two::

        Middleware(SessionMiddleware, store=PostgresStore(store), lifetime=3600)

    Args:
        app: The ASGI app.
        store: The `PostgresStore`.
        lifetime: The idle timeout in seconds (or a timedelta); 0 (the default)
            makes a cookie that lasts until the browser closes, the row then idling
            out after the store's ``session_only_ttl``.
        rolling: Ignored: the idle timeout always slides.
        cookie_name: The cookie's name.
        cookie_same_site: The cookie's ``SameSite``.
        cookie_https_only: Whether the cookie is ``Secure``; None (the default):
            yes, except for requests to localhost (`secure_by_default`).
        cookie_domain: The cookie's ``Domain``.
        cookie_path: The cookie's ``Path`` (default: the app's root path).
        serializer: Turns the session into bytes (default: starsessions' JSON).
        absolute_lifetime: A session ends this long after it was created, however
            busy (seconds or a timedelta; None: no such limit).
        renew_after: The share of the idle timeout (0 to 1) that must pass before
            a request that changes nothing moves the expiry; 0 renews every time.
        rotate_every: Give an active session a new token this often (seconds or a
            timedelta; None: never).
        rotate_grace: How long the old token keeps working after a rotation, for
            requests in flight; shorter than the idle timeout.
        record_devices: Keep the client's IP address (``request.client.host``) and
            user agent in the session when it gets a token, for `user_sessions`.
            Off by default: they are personal data.

    Raises:
        TypeError: If `store` is not a `PostgresStore`, or an option has the wrong type.
        ValueError: If a duration is not positive, `renew_after` not in [0, 1], or
            `rotate_grace` not shorter than the idle timeout.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: PostgresStore,
        lifetime: int | dt.timedelta = 0,
        rolling: bool = False,
        cookie_name: str = "session",
        cookie_same_site: str = "lax",
        cookie_https_only: bool | None = None,
        cookie_domain: str | None = None,
        cookie_path: str | None = None,
        serializer: Serializer | None = None,
        *,
        absolute_lifetime: int | dt.timedelta | None = None,
        renew_after: float = DEFAULT_RENEW_AFTER,
        rotate_every: float | dt.timedelta | None = None,
        rotate_grace: float | dt.timedelta = DEFAULT_ROTATE_GRACE,
        record_devices: bool = False,
    ) -> None:
        if not isinstance(store, PostgresStore):
            raise TypeError(f"store must be a PostgresStore, not {type(store).__name__}")
        super().__init__(
            app, store, lifetime, rolling, cookie_name, cookie_same_site, True,
            cookie_domain, cookie_path, serializer,
        )  # fmt: skip
        self.sessions = store.store
        self.cookie_same_site = cookie_same_site
        self.cookie_https_only = cookie_https_only
        self.manager = SessionManager(
            self.serializer.serialize,
            self.serializer.deserialize,
            idle_timeout=self.lifetime or store.session_only_ttl,
            lifetime=absolute_lifetime,
            renew_after=renew_after,
            rotate_every=rotate_every,
            rotate_grace=rotate_grace,
            record_devices=record_devices,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request: its session loads on demand and is saved as the response starts."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        handler = _Handler(connection, self)
        scope["session"] = LoadGuard()
        scope["session_handler"] = handler
        if scope["type"] == "websocket":  # loads only: it never sends response headers
            await self.app(scope, receive, send)
            return

        async def send_saving(message: Message) -> None:
            if message["type"] == "http.response.start" and handler.loaded is not None:
                client = connection.client
                device = Device(client and client.host, connection.headers.get("user-agent"))
                save = self.manager.save(
                    handler.loaded, connection.session, renew=handler.renew, device=device
                )
                outcome = await arun(save, self.sessions)
                handler.session_id = outcome.token
                headers = MutableHeaders(scope=message)
                _merge(headers, "Vary", vary_with_cookie)
                if outcome.cookie_changed:
                    headers.append("Set-Cookie", self._cookie(outcome, connection))
                    _merge(headers, "Cache-Control", cache_control_with_no_cache_set_cookie)
            await send(message)

        await self.app(scope, receive, send_saving)

    def _cookie(self, outcome: Outcome, connection: HTTPConnection) -> str:
        """The Set-Cookie value of an outcome, as starsessions writes it."""
        path = self.cookie_path or connection.scope.get("root_path", "") or "/"
        if outcome.delete_cookie:
            parts = [
                f"{self.cookie_name}=''",
                f"path={path}",
                "expires=Thu, 01 Jan 1970 00:00:00 GMT",
            ]
        else:
            parts = [f"{self.cookie_name}={outcome.token}", f"path={path}"]
            if self.lifetime > 0 and outcome.expiry is not None:  # never outlives the row
                left = (outcome.expiry - dt.datetime.now(dt.UTC)).total_seconds()
                parts.append(f"max-age={max(0, int(left))}")
        if self.cookie_domain:
            parts.append(f"domain={self.cookie_domain}")
        parts.append(f"httponly; samesite={self.cookie_same_site}")
        secure = self.cookie_https_only
        if secure is None:
            secure = secure_by_default(connection.headers.get("host"))
        if secure:
            parts.append("secure")
        return "; ".join(parts)


class _Handler(SessionHandler):
    """starsessions' per-request handler, loading through the manager."""

    def __init__(self, connection: HTTPConnection, middleware: SessionMiddleware) -> None:
        cookie = connection.cookies.get(middleware.cookie_name)
        super().__init__(
            connection, cookie, middleware.store, middleware.serializer, middleware.lifetime
        )
        self.middleware = middleware
        self.loaded: Loaded | None = None
        self.renew = False

    async def load(self) -> None:
        """Load the session the cookie names (once); an empty one if there is none."""
        if self.loaded is not None:
            return
        manager = self.middleware.manager
        self.loaded = await arun(manager.load(self.session_id), self.middleware.sessions)
        self.is_loaded = True
        self.session_id = self.loaded.token if self.loaded.found else None
        data = self.loaded.data
        data.pop(_METADATA, None)  # stamped on every load: never stored any more
        now = time.time()
        created = data.get(CREATED_KEY, now)
        self.metadata = {"lifetime": self.lifetime, "created": created, "last_access": now}
        self.connection.scope["session"] = data
        self.initially_empty = not data

    async def save(self, remaining_time: int) -> str:
        """Refuse: the middleware saves, through the manager."""
        raise RuntimeError("the session is saved by SessionMiddleware as the response starts")

    def regenerate_id(self) -> str:
        """Have the save issue a new token (starsessions' ``regenerate_session_id``)."""
        self.renew = True
        return ""  # the new token exists only once the save has created it


def _merge(headers: MutableHeaders, name: str, merge: Callable[[list[str]], str | None]) -> None:
    """Set header `name` to what `merge` makes of its values, if that changes it."""
    value = merge(headers.getlist(name))
    if value is not None:
        headers[name] = value


async def _loaded(connection: HTTPConnection, caller: str) -> _Handler:
    """The request's handler, its session loaded; checked."""
    handler = connection.scope.get("session_handler")
    if not isinstance(handler, _Handler):
        raise RuntimeError(f"{caller}() needs sessionstore's SessionMiddleware")
    await handler.load()
    return handler


async def renew_token(connection: HTTPConnection) -> None:
    """Give the session a new token when the response saves it, keeping its data.

    The old token's row is deleted then. `login_session` does this for you.

    Raises:
        RuntimeError: Without this package's ``SessionMiddleware``.
    """
    (await _loaded(connection, "renew_token")).renew = True


async def login_session(connection: HTTPConnection, owner: str) -> None:
    """Log the session in as `owner`: a new token, and the row owned by the user.

    The owner (the user id, as text) is kept in the session, so every save keeps the
    row owned (an `AsyncStore` with ``owners=True``); ``request.session.clear()``
    drops it. Each helper loads the request's session if it was not.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        RuntimeError: Without this package's ``SessionMiddleware``.
    """
    validate_owner(owner)
    handler = await _loaded(connection, "login_session")
    handler.middleware.manager.log_in(connection.session, owner)
    handler.renew = True


async def session_owner(connection: HTTPConnection) -> str | None:
    """The user the session belongs to (set by `login_session`), or None.

    Raises:
        RuntimeError: Without this package's ``SessionMiddleware``.
    """
    await _loaded(connection, "session_owner")
    return owner_of(connection.session)


async def signed_in_within(connection: HTTPConnection, within: dt.timedelta | float) -> bool:
    """Whether the session's user signed in (`login_session`) no longer than `within` ago.

    For pages that ask for the password again before a sensitive change.

    Raises:
        TypeError, ValueError: If `within` is not a positive timedelta or number of seconds.
        RuntimeError: Without this package's ``SessionMiddleware``.
    """
    handler = await _loaded(connection, "signed_in_within")
    return handler.middleware.manager.signed_in_within(connection.session, within)


async def _owners(
    connection: HTTPConnection,
    caller: str,
    steps: Callable[[SessionManager, str, str | None], Steps[T]],
    nobody: T,
) -> T:
    """Run a decision on the session's owner and token; `nobody` if nobody is logged in."""
    handler = await _loaded(connection, caller)
    owner = owner_of(connection.session)
    if owner is None:
        return nobody
    middleware = handler.middleware
    return await arun(steps(middleware.manager, owner, handler.session_id), middleware.sessions)


async def user_sessions(connection: HTTPConnection) -> list[UserSession]:
    """List the live sessions of the session's owner ("where am I logged in").

    Returns:
        The sessions, soonest to expire first, this one marked `current`; empty if
        nobody is logged in. None holds a token: `UserSession.id` names one for
        `revoke`.

    Raises:
        RuntimeError: Without this package's ``SessionMiddleware``.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
    """
    return await _owners(connection, "user_sessions", lambda m, o, t: m.sessions(o, t), [])


async def revoke(connection: HTTPConnection, session_id: str) -> bool:
    """End one of the owner's sessions by its listed `UserSession.id` ("log out that device").

    Returns:
        Whether it was a live session of the session's owner (only theirs end);
        False if nobody is logged in.

    Raises:
        TypeError: If `session_id` is not a str.
        RuntimeError: Without this package's ``SessionMiddleware``.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
    """
    return await _owners(connection, "revoke", lambda m, o, t: m.revoke(o, session_id), False)


async def logout_everywhere(connection: HTTPConnection) -> int:
    """End every other session of the session's owner now; this one stays.

    Returns:
        How many sessions were deleted; 0 if nobody is logged in.

    Raises:
        RuntimeError: Without this package's ``SessionMiddleware``.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
    """
    steps = SessionManager.log_out_everywhere
    return await _owners(connection, "logout_everywhere", lambda m, o, t: steps(o, t), 0)
