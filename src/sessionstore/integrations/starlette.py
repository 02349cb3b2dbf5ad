"""Starlette and FastAPI sessions in PostgreSQL via starsessions: docs/integrations-starlette.md."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, TypeVar

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
    UserSession,
    arun,
    owner_of,
    secure_by_default,
    to_timedelta,
)
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    cache_control_with_no_cache_set_cookie,
    merge_header,
    missing_extra,
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

    `session_only_ttl` is the idle timeout of sessions whose cookie lasts until the
    browser closes (``lifetime=0``). A bad argument raises TypeError or ValueError.
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

    async def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        """Refuse: only starsessions' own middleware calls these, bypassing the manager."""
        raise RuntimeError(
            "PostgresStore needs sessionstore's SessionMiddleware, not starsessions' own"
        )

    # starsessions' store API.
    read = write = remove = _refuse


class SessionMiddleware(starsessions.SessionMiddleware):
    """starsessions' ``SessionMiddleware``, its loads and saves decided by `SessionManager`.

    starsessions' options (``cookie_https_only=None``: `secure_by_default`), then the
    manager's (docs/integrations-starlette.md); a bad one raises TypeError or ValueError.
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
                merge_header(headers, "Vary", vary_with_cookie)
                if outcome.cookie_changed:
                    headers.append("Set-Cookie", self._cookie(outcome, connection))
                    merge_header(headers, "Cache-Control", cache_control_with_no_cache_set_cookie)
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
            if self.lifetime > 0 and outcome.max_age is not None:
                parts.append(f"max-age={outcome.max_age}")
        if self.cookie_domain:
            parts.append(f"domain={self.cookie_domain}")
        parts.append(f"httponly; samesite={self.cookie_same_site}")
        https_only = self.cookie_https_only
        if https_only or (https_only is None and secure_by_default(connection.headers.get("host"))):
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


async def _loaded(connection: HTTPConnection, caller: str) -> _Handler:
    """The request's handler, its session loaded; checked."""
    handler = connection.scope.get("session_handler")
    if not isinstance(handler, _Handler):
        raise RuntimeError(f"{caller}() needs sessionstore's SessionMiddleware")
    await handler.load()
    return handler


async def renew_token(connection: HTTPConnection) -> None:
    """Have the response save the session under a new token, deleting the old row."""
    (await _loaded(connection, "renew_token")).renew = True


async def login_session(connection: HTTPConnection, owner: str) -> None:
    """`SessionManager.log_in` for the request's session, under a new token."""
    validate_owner(owner)
    handler = await _loaded(connection, "login_session")
    handler.middleware.manager.log_in(connection.session, owner)
    handler.renew = True


async def session_owner(connection: HTTPConnection) -> str | None:
    """The user the request's session belongs to (set by `login_session`), or None."""
    await _loaded(connection, "session_owner")
    return owner_of(connection.session)


async def signed_in_within(connection: HTTPConnection, within: dt.timedelta | float) -> bool:
    """`SessionManager.signed_in_within` for the request's session."""
    handler = await _loaded(connection, "signed_in_within")
    return handler.middleware.manager.signed_in_within(connection.session, within)


async def _owners(
    connection: HTTPConnection,
    caller: str,
    steps: Callable[[SessionManager, str | None, str | None], Steps[T]],
) -> T:
    """Run a per-user decision on the session's owner and token."""
    handler = await _loaded(connection, caller)
    middleware, owner = handler.middleware, owner_of(connection.session)
    return await arun(steps(middleware.manager, owner, handler.session_id), middleware.sessions)


async def user_sessions(connection: HTTPConnection) -> list[UserSession]:
    """`SessionManager.sessions` for the request's session's owner."""
    return await _owners(connection, "user_sessions", lambda m, o, t: m.sessions(o, t))


async def revoke(connection: HTTPConnection, session_id: str) -> bool:
    """`SessionManager.revoke` for the request's session's owner."""
    return await _owners(connection, "revoke", lambda m, o, t: m.revoke(o, session_id))


async def logout_everywhere(connection: HTTPConnection) -> int:
    """`SessionManager.log_out_everywhere` for the request's session's owner, but this one."""
    return await _owners(
        connection, "logout_everywhere", lambda m, o, t: m.log_out_everywhere(o, t)
    )
