"""Starlette and FastAPI sessions in PostgreSQL: a ``starsessions`` store on `AsyncStore`.

Install with ``pip install "sessionstore[starlette]"``, then::

    from psycopg_pool import AsyncConnectionPool
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starsessions import SessionAutoloadMiddleware

    from sessionstore import AsyncStore
    from sessionstore.integrations.starlette import PostgresStore, SessionMiddleware

    pool = AsyncConnectionPool(dsn, open=False, kwargs={"autocommit": True})
    store = AsyncStore(pool)


    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with pool, store:  # open the pool, run the cleanup task
            yield


    app = Starlette(
        lifespan=lifespan,
        middleware=[
            Middleware(SessionMiddleware, store=PostgresStore(store), lifetime=3600),
            Middleware(SessionAutoloadMiddleware),
        ],
    )

starsessions owns the cookie and the serialisation (JSON by default; the store gets
bytes); this module decides where the bytes go and under which token:

- Tokens are issued here, as SCS issues them (32 random bytes, url-safe base64, 43
  characters), replacing starsessions' own IDs. A cookie whose token the database
  does not know (expired, deleted, made up or tampered with) gets an empty session,
  and the session gets a new token when it is saved: a token is never adopted from
  the client.
- ``lifetime > 0``: the row expires when the cookie does (``ttl`` seconds after the
  save: the remaining lifetime, or the whole lifetime again with ``rolling=True``).
- ``lifetime = 0`` (starsessions' default): the cookie lasts until the browser
  closes, which the server never learns. The row expires `session_only_ttl` (default
  24 hours) after the last request that saved the session; starsessions saves a
  non-empty session on every request that loads it, so this is an idle timeout.
- starsessions writes a loaded, non-empty session back on every request. When its
  data is the same as what was read (starsessions' ``last_access`` timestamp aside),
  the row's expiry is moved with the store's ``touch`` instead: the payload is not
  rewritten, a write made meanwhile by another request is kept, and a session deleted
  meanwhile (logged out elsewhere) stays deleted.
- A new session, and a renewed one, is saved with the store's ``create`` under a fresh
  token: a token that happens to be taken is never overwritten.
- `renew_token` gives the session a new token and deletes the old row, keeping the
  data: call it on login (session fixation defence).
- Sessions per user (an `AsyncStore` with ``owners=True``): `login_session` renews
  the token and makes the session the user's, `user_sessions` lists the user's
  sessions and `logout_everywhere` ends all of them but the current one.
- `SessionMiddleware` is starsessions' own with the headers SCS sends, which
  starsessions' sends neither of: every response of a request that loaded the
  session carries ``Vary: Cookie``, and one that sets or deletes the session cookie
  ``Cache-Control: no-cache="Set-Cookie"`` (both merged into the values the view
  set), so no shared cache hands one user's page or cookie to another.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from .._core import validate_owner
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    OWNER_KEY,
    UserSession,
    cache_control_with_no_cache_set_cookie,
    create_fresh,
    is_token,
    listing,
    missing_extra,
    owner_of,
    to_timedelta,
    vary_with_cookie,
)

try:
    import starsessions
    from starlette.datastructures import MutableHeaders
    from starlette.requests import HTTPConnection
    from starlette.types import Message, Receive, Scope, Send
    from starsessions import (
        JsonSerializer,
        Serializer,
        SessionStore,
        get_session_handler,
        is_loaded,
        load_session,
    )
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
    "session_owner",
    "user_sessions",
]

logger = logging.getLogger(__name__)

#: The last token this request's context read, and the data the store had for it
#: (None: no live session). `write` trusts a token only if the store had it, and
#: touches instead of rewriting when the data is what was read; this spares it a
#: second query when the read happened in the same context (the usual case), and it
#: queries otherwise.
_last_read: contextvars.ContextVar[tuple[str, bytes | None] | None] = contextvars.ContextVar(
    "sessionstore_last_read", default=None
)

#: starsessions' metadata key in the session, and the field it rewrites on every load.
_METADATA = "__metadata__"
_LAST_ACCESS = "last_access"


class PostgresStore(SessionStore):
    """A starsessions ``SessionStore`` that keeps sessions in PostgreSQL.

    Pass it to starsessions' ``SessionMiddleware(store=...)``. The `AsyncStore`
    (and its pool) is the application's to open and close, e.g. in its lifespan.

    Args:
        store: The store to keep sessions in.
        session_only_ttl: How long the row of a browser-session cookie's session
            (``lifetime=0``) lives after its last save: a `datetime.timedelta` or
            seconds (default 24 hours).
        serializer: The serializer the ``SessionMiddleware`` uses (default: its
            default, starsessions' ``JsonSerializer``). The store decodes the session
            with it to find the owner `login_session` put in, to tell whether the
            data changed since it was read, and for `user_sessions`.

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
        serializer: Serializer | None = None,
    ) -> None:
        if not isinstance(store, AsyncStore):
            raise TypeError(f"store must be a sessionstore.AsyncStore, not {type(store).__name__}")
        self.store = store
        self.session_only_ttl = to_timedelta(session_only_ttl, "session_only_ttl")
        self.serializer: Serializer = JsonSerializer() if serializer is None else serializer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.store.name}>"

    async def read(self, session_id: str, lifetime: int) -> bytes:
        """Return a session's data, or ``b""`` (no session) if the store lacks it.

        Args:
            session_id: The token from the cookie.
            lifetime: The middleware's lifetime (unused: the row's expiry rules).

        Returns:
            The data starsessions wrote, or ``b""``.

        Raises:
            sessionstore.DatabaseError: If the store failed.
        """
        if not is_token(session_id):
            logger.debug("ignoring a session cookie that is not a token; new session")
            return b""
        data = await self.store.find(session_id)
        _last_read.set((session_id, data))
        if data is None:
            logger.debug("no live session for the cookie's token; new session")
            return b""
        return data

    async def write(self, session_id: str, data: bytes, lifetime: int, ttl: int) -> str:
        """Save a session; return its token, which is new unless the store had it.

        A session the store had is touched (its expiry moved, the payload left as it
        is) if its data is what was read, and committed otherwise; a new one is
        created under a fresh token. (When the read happened in another context, the
        data is compared with the row as it is now.)

        Args:
            session_id: The cookie's token, or an ID starsessions generated.
            data: The serialised session.
            lifetime: The middleware's lifetime in seconds; 0 for a
                browser-session cookie.
            ttl: Seconds the session has left (ignored when `lifetime` is 0).

        Returns:
            The token the cookie must hold.

        Raises:
            ValueError: If `data` is larger than the store's ``max_data_size``.
            sessionstore.DatabaseError: If the store failed.
        """
        if lifetime > 0 and ttl <= 0:
            # A non-rolling session past its lifetime: its cookie is being deleted
            # (max-age <= 0), so keep nothing.
            await self.remove(session_id)
            return session_id
        seconds = self.session_only_ttl if lifetime <= 0 else dt.timedelta(seconds=ttl)
        expiry = dt.datetime.now(dt.UTC) + seconds
        decoded = self.decode(data)
        stored = await self._stored(session_id)
        if stored is not None:
            if self._unchanged(stored, decoded):
                if not await self.store.touch(session_id, expiry):
                    # Deleted since it was read (logged out on another device, or
                    # expired during the request): writing the data back would
                    # resurrect it. The cookie keeps a token that names nothing, so
                    # the next request starts a fresh, empty session.
                    logger.debug("session gone since it was read: not saved")
                    _last_read.set((session_id, None))
                return session_id
            await self.store.commit(session_id, data, expiry, owner=owner_of(decoded))
            _last_read.set((session_id, data))
            return session_id
        owner = owner_of(decoded)
        token = await create_fresh(
            lambda fresh: self.store.create(fresh, data, expiry, owner=owner)
        )
        _last_read.set((token, data))
        return token

    async def remove(self, session_id: str) -> None:
        """Delete a session; a token the store lacks is not an error.

        Args:
            session_id: The cookie's token.

        Raises:
            sessionstore.DatabaseError: If the store failed.
        """
        if is_token(session_id):
            await self.store.delete(session_id)
            _last_read.set((session_id, None))
            logger.debug("session removed")

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode a session's data with the serializer; ``{}`` if it does not decode.

        Args:
            data: The stored data.

        Returns:
            The session as starsessions sees it (with its ``__metadata__``).
        """
        try:
            decoded = self.serializer.deserialize(data)
        except (UnicodeDecodeError, ValueError, TypeError):
            return {}
        return decoded if isinstance(decoded, dict) else {}

    async def _stored(self, session_id: str) -> bytes | None:
        """The data the store has for a token the cookie sent; None if no live session."""
        if not is_token(session_id):
            return None  # starsessions' own ID for a new session, or garbage
        last = _last_read.get()
        if last is not None and last[0] == session_id:
            return last[1]
        return await self.store.find(session_id)

    def _unchanged(self, stored: bytes, decoded: dict[str, Any]) -> bool:
        """Whether the session to save holds what was read.

        starsessions stamps ``last_access`` into its metadata on every load, so the
        bytes always differ; the comparison leaves that one field out (a touch keeps
        the stored one, the time of the last real write).
        """
        before = self.decode(stored)
        if not before or not decoded:
            return False
        return _without_last_access(before) == _without_last_access(decoded)


class SessionMiddleware(starsessions.SessionMiddleware):
    """starsessions' ``SessionMiddleware``, with the response headers SCS sends.

    Use it in place of starsessions' own (same options, same behaviour)::

        Middleware(SessionMiddleware, store=PostgresStore(store), lifetime=3600)

    On top of starsessions' work, every response of a request whose session was
    loaded carries ``Vary: Cookie``, and a response that sets or deletes the session
    cookie carries ``Cache-Control: no-cache="Set-Cookie"``: a shared cache may keep
    the page, never the cookie. Both are merged into what the view set (one ``Vary``
    header, ``Cookie`` listed once; a ``no-store`` or plain ``no-cache`` already
    covers the cookie and is left alone). It works with any starsessions store.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run starsessions' middleware, adding SCS's headers to the response."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            # starsessions calls this after it has saved the session and added its
            # Set-Cookie, so the message holds the headers as they will be sent.
            if message["type"] == "http.response.start":
                self._add_headers(scope, MutableHeaders(scope=message))
            await send(message)

        await super().__call__(scope, receive, send_with_headers)

    def _add_headers(self, scope: Scope, headers: MutableHeaders) -> None:
        handler = scope.get("session_handler")
        if isinstance(handler, SessionHandler) and handler.is_loaded:
            _merge_header(headers, "Vary", vary_with_cookie)
        if any(self._is_session_cookie(value) for value in headers.getlist("Set-Cookie")):
            _merge_header(headers, "Vary", vary_with_cookie)
            _merge_header(headers, "Cache-Control", cache_control_with_no_cache_set_cookie)

    def _is_session_cookie(self, set_cookie: str) -> bool:
        return set_cookie.split("=", 1)[0].strip() == self.cookie_name


def _merge_header(
    headers: MutableHeaders, name: str, merge: Callable[[list[str]], str | None]
) -> None:
    """Set header `name` to what `merge` makes of all its values, if that changes it."""
    value = merge(headers.getlist(name))
    if value is not None:
        headers[name] = value  # replaces every header of that name


def _without_last_access(session: dict[str, Any]) -> dict[str, Any]:
    metadata = session.get(_METADATA)
    if not isinstance(metadata, dict):
        return session
    rest = {key: value for key, value in metadata.items() if key != _LAST_ACCESS}
    return {**session, _METADATA: rest}


def _postgres_store(connection: HTTPConnection, caller: str) -> PostgresStore:
    """The request's `PostgresStore`, checked."""
    try:
        store = get_session_handler(connection).store
    except KeyError:
        raise RuntimeError(f"{caller}() needs SessionMiddleware") from None
    if not isinstance(store, PostgresStore):
        raise RuntimeError(f"{caller}() needs SessionMiddleware(store=PostgresStore(...))")
    return store


async def renew_token(connection: HTTPConnection) -> None:
    """Give the session a new token, keeping its data; delete the old token's row.

    The new token is issued when the response saves the session. Call it on login
    (session fixation defence)::

        async def login(request):
            ...  # check the credentials
            await renew_token(request)
            request.session["user_id"] = user.id

    Args:
        connection: The request (or websocket) whose session to renew; the session
            is loaded first if it was not.

    Raises:
        sessionstore.DatabaseError: If the store failed.
    """
    if not is_loaded(connection):
        await load_session(connection)
    handler = get_session_handler(connection)
    old = handler.session_id
    handler.regenerate_id()  # starsessions' ID: `write` replaces it with a new token
    if old:
        await handler.store.remove(old)
        logger.debug("session token renewed: old row deleted")


async def login_session(connection: HTTPConnection, owner: str) -> None:
    """Log the request's session in as `owner`: a new token, owned by the user.

    The session gets a new token (as `renew_token`), and when the response saves it,
    it is saved as `owner`'s session, so `user_sessions` lists it and
    `logout_everywhere` can end it. Needs an `AsyncStore` with ``owners=True``::

        async def login(request):
            user = await authenticate(request)
            await login_session(request, str(user.id))
            request.session["user_id"] = user.id

    The owner is kept in the session's data (under ``"_session_owner"``), so
    `session_owner` tells it on every later request and every save keeps the row
    owned. ``request.session.clear()`` (logout) drops it with everything else.

    Args:
        connection: The request (or websocket); its session is loaded if it was not.
        owner: Who the session belongs to: the user id, as text.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        RuntimeError: If the app's ``SessionMiddleware`` has no `PostgresStore`.
        sessionstore.DatabaseError: If the store failed.
    """
    validate_owner(owner)
    _postgres_store(connection, "login_session")  # the owner is saved only by this store
    await renew_token(connection)
    connection.session[OWNER_KEY] = owner


async def session_owner(connection: HTTPConnection) -> str | None:
    """The user the request's session belongs to (set by `login_session`), or None.

    Args:
        connection: The request (or websocket); its session is loaded if it was not.

    Returns:
        The owner, or None for a session nobody logged in.

    Raises:
        RuntimeError: If the app's ``SessionMiddleware`` has no `PostgresStore`.
        sessionstore.DatabaseError: If the store failed.
    """
    _postgres_store(connection, "session_owner")
    if not is_loaded(connection):
        await load_session(connection)
    return owner_of(connection.session)


async def user_sessions(connection: HTTPConnection) -> list[UserSession]:
    """List the live sessions of the request's owner ("where am I logged in").

    Args:
        connection: The request (or websocket); its session is loaded if it was not.

    Returns:
        The sessions, soonest to expire first, the current one marked `current`;
            empty if the session belongs to nobody (not logged in with
            `login_session`). Show users only a prefix of each `UserSession.key`.

    Raises:
        RuntimeError: If the app's ``SessionMiddleware`` has no `PostgresStore`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    store = _postgres_store(connection, "user_sessions")
    owner = await session_owner(connection)
    if owner is None:
        return []
    owned = await store.store.sessions_of(owner)
    return listing(owned, _live_token(connection), store.decode)


async def logout_everywhere(connection: HTTPConnection) -> int:
    """End every other session of the request's owner, at once.

    The current session stays logged in; the others are deleted now, so their next
    request gets an empty session. To end the current one as well, call
    ``request.session.clear()`` after this. Needs an `AsyncStore` with
    ``owners=True``::

        async def logout_all(request):
            ended = await logout_everywhere(request)
            return PlainTextResponse(f"Logged out {ended} other sessions.")

    Args:
        connection: The request (or websocket); its session is loaded if it was not.

    Returns:
        How many sessions were deleted; 0 if the session belongs to nobody.

    Raises:
        RuntimeError: If the app's ``SessionMiddleware`` has no `PostgresStore`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    store = _postgres_store(connection, "logout_everywhere")
    owner = await session_owner(connection)
    if owner is None:
        return 0
    ended = await store.store.delete_owned(owner, keep=_live_token(connection))
    logger.debug("logged out everywhere else: %d sessions deleted", ended)
    return ended


def _live_token(connection: HTTPConnection) -> str | None:
    """The request's token; None for starsessions' own ID of a session not saved yet.

    A token whose session is gone is harmless here: it only spares a row that no
    longer exists.
    """
    session_id = get_session_handler(connection).session_id
    return session_id if session_id is not None and is_token(session_id) else None
