"""aiohttp sessions in PostgreSQL: an ``aiohttp_session`` storage on `AsyncStore`.

Install with ``pip install "sessionstore[aiohttp]"``, then::

    from aiohttp import web

    from sessionstore.integrations.aiohttp import setup

    app = web.Application()
    setup(app, dsn, max_age=3600)  # the storage, its middleware, its pool's lifecycle

`setup` makes a pool (not opened yet), an `AsyncStore` and a `PostgresStorage`,
installs aiohttp-session's middleware with it, adds `postgres_context` to the app's
``cleanup_ctx`` (the pool opens when the app starts and closes when it stops) and the
``Vary: Cookie`` signal. Handlers use aiohttp-session as usual (``await
get_session(request)``, ``await new_session(request)``); the data lives in the
sessions table, in aiohttp-session's own JSON layout, and the cookie holds only a
token.

- Tokens are issued by the storage (32 random bytes, url-safe base64, as SCS), saved
  with ``create`` (never over a live session). A cookie the store does not know
  (expired, deleted, made up, tampered with) gets a new, empty session, and a fresh
  token when it is saved: a token is never adopted, and an identity set with
  ``Session.set_new_identity`` is not used as a token either.
- ``new_session(request)`` deletes the row of the session the request loaded: the
  old token is dead at once. `renew_token` does that and keeps the data (call it on
  login); `login_session` also makes the session the user's (``owners=True``).
- aiohttp-session saves a session only when it changed. A session saved with the
  data it was loaded with (``session.changed()`` to slide its expiry) only has its
  expiry moved (``touch``), so a session deleted meanwhile is not brought back. An
  emptied session (``session.invalidate()``) deletes its row and its cookie.
- The row expires when the cookie does: ``max_age`` seconds after the save; with no
  ``max_age`` (a cookie that lasts until the browser closes) `session_only_ttl`
  after it (default 24 hours).
- Headers as SCS sends them: ``Vary: Cookie`` on every response of a request that
  used the session (the signal `setup` installs, `vary_cookie`), and ``Cache-Control:
  no-cache="Set-Cookie"`` on a response that sets or clears the cookie, both merged
  into the values the handler set. (aiohttp-session itself sends neither.)
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from .._core import validate_owner
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    OWNER_KEY,
    UserSession,
    cache_control_with_no_cache_set_cookie,
    create_fresh,
    is_current,
    is_token,
    missing_extra,
    owner_of,
    to_timedelta,
    vary_with_cookie,
)

try:
    from aiohttp import web
    from aiohttp_session import (
        SESSION_KEY,
        STORAGE_KEY,
        AbstractStorage,
        Session,
        SessionData,
        get_session,
        new_session,
        session_middleware,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "aiohttp", exc) from exc

from psycopg_pool import AsyncConnectionPool

from ..store_async import AsyncStore

__all__ = [
    "PostgresStorage",
    "UserSession",
    "login_session",
    "logout_everywhere",
    "postgres_context",
    "renew_token",
    "session_owner",
    "setup",
    "user_sessions",
    "vary_cookie",
]

logger = logging.getLogger(__name__)


@dataclass
class _Loaded:
    """What the storage knows of the current request's session."""

    storage: PostgresStorage
    token: str | None  # a token the store has (loaded or just created); else None
    data: bytes | None  # what the store holds under it, as last read or written


#: The current request's `_Loaded`. aiohttp runs each request in a task of its own,
#: so this never leaks from one request to another; aiohttp-session's
#: ``new_session()`` calls the storage without the request, and this is how the
#: storage knows which row the new session replaces.
_current: contextvars.ContextVar[_Loaded | None] = contextvars.ContextVar(
    "sessionstore_aiohttp", default=None
)


class PostgresStorage(AbstractStorage):
    """An aiohttp-session storage that keeps sessions in PostgreSQL.

    Pass it to aiohttp-session's ``setup(app, storage)``, or let `setup` make it.
    The `AsyncStore` (and its pool) is the application's to open and close: add
    `postgres_context` to ``app.cleanup_ctx``.

    Args:
        store: The store to keep sessions in.
        cookie_name: The cookie's name (aiohttp-session's default,
            ``"AIOHTTP_SESSION"``).
        domain: The cookie's Domain.
        max_age: Seconds a session lives after its last save (cookie and row);
            None for a cookie that lasts until the browser closes.
        path: The cookie's Path.
        secure: Whether the cookie is Secure.
        httponly: Whether the cookie is HttpOnly.
        samesite: The cookie's SameSite.
        session_only_ttl: How long the row of a session without ``max_age`` lives
            after its last save (default 24 hours).
        encoder: Turns aiohttp-session's session data into text (default JSON).
        decoder: Turns it back.

    Raises:
        TypeError: If `store` is not an `AsyncStore`, or `session_only_ttl` is
            neither a timedelta nor a number.
        ValueError: If `session_only_ttl` or `max_age` is not positive.
    """

    def __init__(
        self,
        store: AsyncStore,
        *,
        cookie_name: str = "AIOHTTP_SESSION",
        domain: str | None = None,
        max_age: int | None = None,
        path: str = "/",
        secure: bool | None = None,
        httponly: bool = True,
        samesite: str | None = None,
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
        encoder: Callable[[object], str] = json.dumps,
        decoder: Callable[[str], Any] = json.loads,
    ) -> None:
        if not isinstance(store, AsyncStore):
            raise TypeError(f"store must be a sessionstore.AsyncStore, not {type(store).__name__}")
        if max_age is not None:
            to_timedelta(max_age, "max_age")
        super().__init__(
            cookie_name=cookie_name,
            domain=domain,
            max_age=max_age,
            path=path,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
            encoder=encoder,
            decoder=decoder,
        )
        self.store = store
        self.session_only_ttl = to_timedelta(session_only_ttl, "session_only_ttl")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.store.name}>"

    async def new_session(self) -> Session:
        """A new, empty session; the row of the session the request loaded is deleted.

        aiohttp-session's ``new_session(request)`` calls this: the old token is dead
        from now on, whatever the request does next.

        Returns:
            The new session (it gets a token when it is saved).

        Raises:
            sessionstore.DatabaseError: If the store failed.
        """
        loaded = _current.get()
        if loaded is not None and loaded.storage is self and loaded.token is not None:
            await self.store.delete(loaded.token)
            logger.debug("new session: the old row deleted")
            loaded.token, loaded.data = None, None
        return Session(None, data=None, new=True, max_age=self.max_age)

    async def load_session(self, request: web.Request) -> Session:
        """Read the session the cookie names; a new one if the store lacks it.

        Args:
            request: The request.

        Returns:
            The session.

        Raises:
            sessionstore.DatabaseError: If the store failed.
        """
        loaded = _Loaded(self, None, None)
        _current.set(loaded)
        value = self.load_cookie(request)
        if not is_token(value):
            if value is not None:
                logger.debug("ignoring a session cookie that is not a token; new session")
            return Session(None, data=None, new=True, max_age=self.max_age)
        assert value is not None
        raw = await self.store.find(value)
        decoded = None if raw is None else self._decode(raw)
        if decoded is None:
            logger.debug("no live session for the cookie's token; new session")
            return Session(None, data=None, new=True, max_age=self.max_age)
        loaded.token, loaded.data = value, raw
        return Session(value, data=cast(SessionData, decoded), new=False, max_age=self.max_age)

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        """Save a changed session and set (or delete) its cookie.

        Args:
            request: The request.
            response: The response, to set the cookie on.
            session: The session.

        Raises:
            ValueError: If the session is larger than the store's ``max_data_size``.
            sessionstore.DatabaseError: If the store failed (aiohttp answers 500).
        """
        loaded = _current.get()
        if loaded is None or loaded.storage is not self:
            loaded = _Loaded(self, None, None)  # saved without being loaded: a new one
            _current.set(loaded)
        token = loaded.token if session.identity == loaded.token else None
        if session.empty:
            if token is not None:
                await self.store.delete(token)
                logger.debug("session emptied: row deleted")
                loaded.token, loaded.data = None, None
            if self.cookie_name in request.cookies:
                self._set_cookie(response, "")
            return
        data = self._encoder(self._get_session_data(session)).encode()
        expiry = dt.datetime.now(dt.UTC) + (
            self.session_only_ttl
            if session.max_age is None
            else dt.timedelta(seconds=session.max_age)
        )
        owner = owner_of(dict(session))
        if token is not None:
            if loaded.data is not None and self._decode(loaded.data) == self._decode(data):
                if not await self.store.touch(token, expiry):
                    # Deleted since it was read (logged out elsewhere, or expired):
                    # writing it back would revive it.
                    logger.debug("session gone since it was read: not saved, cookie deleted")
                    loaded.token, loaded.data = None, None
                    self._set_cookie(response, "")
                    return
            else:
                await self.store.commit(token, data, expiry, owner=owner)
        else:
            token = await create_fresh(
                lambda fresh: self.store.create(fresh, data, expiry, owner=owner)
            )
            if session.new:
                session.set_new_identity(token)
        loaded.token, loaded.data = token, data
        self._set_cookie(response, token, max_age=session.max_age)

    def _set_cookie(
        self, response: web.StreamResponse, value: str, *, max_age: int | None = None
    ) -> None:
        """Set (or, for ``""``, delete) the cookie; merge SCS's Cache-Control in."""
        self.save_cookie(response, value, max_age=max_age)
        merged = cache_control_with_no_cache_set_cookie(
            response.headers.getall("Cache-Control", [])
        )
        if merged is not None:
            response.headers["Cache-Control"] = merged

    def _decode(self, raw: bytes) -> dict[str, Any] | None:
        """aiohttp-session's data from stored bytes; None if it is not what it wrote."""
        try:
            data = self._decoder(raw.decode())
        except (UnicodeDecodeError, ValueError, TypeError):
            logger.warning("stored session data does not decode; starting a new session")
            return None
        if not isinstance(data, dict) or not isinstance(data.get("session", {}), dict):
            logger.warning("stored session data is not aiohttp-session's; starting a new one")
            return None
        return data

    def decode_session(self, raw: bytes) -> dict[str, Any]:
        """The session's own mapping from stored bytes (``{}`` if it does not decode).

        Args:
            raw: The stored data.

        Returns:
            What handlers see in the session.
        """
        data = self._decode(raw) or {}
        session = data.get("session")
        return session if isinstance(session, dict) else {}


async def vary_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` signal: ``Vary: Cookie`` if the request used the session.

    `setup` installs it; with aiohttp-session's own ``setup``, add it yourself:
    ``app.on_response_prepare.append(vary_cookie)``.

    Args:
        request: The request.
        response: Its response, about to be sent.
    """
    if request.get(SESSION_KEY) is not None:
        merged = vary_with_cookie(response.headers.getall("Vary", []))
        if merged is not None:
            response.headers["Vary"] = merged


def postgres_context(
    pool: AsyncConnectionPool[Any], store: AsyncStore
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: open the pool and the store with the app, close after.

    ::

        app.cleanup_ctx.append(postgres_context(pool, store))

    Args:
        pool: The store's pool, not opened yet (``open=False``).
        store: The store (its cleanup task starts with it).

    Returns:
        The async generator function aiohttp runs at startup and cleanup.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            async with store:
                yield
        finally:
            await pool.close()

    return context


def setup(
    app: web.Application,
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 30.0,
    store_options: dict[str, Any] | None = None,
    **storage_options: Any,
) -> PostgresStorage:
    """Keep the app's aiohttp sessions in PostgreSQL: everything in one call.

    Makes a pool (opened when the app starts, closed when it stops, through
    `postgres_context` in ``app.cleanup_ctx``), an `AsyncStore` on it and a
    `PostgresStorage`; installs aiohttp-session's middleware with the storage and
    the `vary_cookie` signal. Nothing connects before the app starts.

    Args:
        app: The application (before it starts).
        dsn: The PostgreSQL connection string.
        min_size: The pool's minimum size.
        max_size: The pool's maximum size.
        timeout: How long a request waits for a connection before the store raises
            `sessionstore.DatabaseError` (the pool's ``timeout``).
        store_options: `AsyncStore`'s options (``table``, ``schema``,
            ``hash_tokens``, ``owners``, ``cleanup``, ...).
        **storage_options: `PostgresStorage`'s options (``max_age``,
            ``cookie_name``, ``secure``, ...).

    Returns:
        The storage (its ``store`` is the `AsyncStore`).
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn,
        open=False,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        kwargs={"autocommit": True},
    )
    store = AsyncStore(pool, **(store_options or {}))
    storage = PostgresStorage(store, **storage_options)
    app.cleanup_ctx.append(postgres_context(pool, store))
    app.middlewares.append(session_middleware(storage))
    app.on_response_prepare.append(vary_cookie)
    return storage


# --------------------------------------------------------------------------- helpers


def _storage(request: web.Request, caller: str) -> PostgresStorage:
    storage = request.get(STORAGE_KEY)
    if not isinstance(storage, PostgresStorage):
        raise RuntimeError(f"{caller}() needs aiohttp-session's middleware with a PostgresStorage")
    return storage


async def renew_token(request: web.Request) -> Session:
    """Give the request's session a new token, keeping its data; the old row goes now.

    Call it on login (session fixation defence). The new token is issued when the
    response saves the session.

    Args:
        request: The request.

    Returns:
        The new session, holding the old one's data.

    Raises:
        RuntimeError: If the app has no aiohttp-session middleware with a
            `PostgresStorage`.
        sessionstore.DatabaseError: If the store failed.
    """
    _storage(request, "renew_token")
    data = dict(await get_session(request))
    session = await new_session(request)  # deletes the old row
    session.update(data)
    session.changed()  # saved even when the data is empty
    return session


async def login_session(request: web.Request, owner: str) -> Session:
    """Log the request's session in as `owner`: a new token, owned by the user.

    Needs a store with ``owners=True``. The owner is kept in the session (under
    ``"_session_owner"``), so every save keeps the row owned; ``invalidate()``
    (logout) drops it.

    Args:
        request: The request.
        owner: The user id, as text.

    Returns:
        The new session.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        RuntimeError: If the app has no aiohttp-session middleware with a
            `PostgresStorage`.
        sessionstore.DatabaseError: If the store failed.
    """
    validate_owner(owner)
    session = await renew_token(request)
    session[OWNER_KEY] = owner
    return session


async def session_owner(request: web.Request) -> str | None:
    """The user the request's session belongs to (set by `login_session`), or None.

    Raises:
        RuntimeError: If the app has no aiohttp-session middleware with a
            `PostgresStorage`.
        sessionstore.DatabaseError: If the store failed.
    """
    _storage(request, "session_owner")
    return owner_of(dict(await get_session(request)))


async def user_sessions(request: web.Request) -> list[UserSession]:
    """List the live sessions of the request's owner ("where am I logged in").

    Returns:
        The sessions, soonest to expire first, the current one marked `current`;
            empty if the session belongs to nobody. Show only a prefix of each
            `UserSession.key`.

    Raises:
        RuntimeError: If the app has no aiohttp-session middleware with a
            `PostgresStorage`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    storage = _storage(request, "user_sessions")
    owner = await session_owner(request)
    if owner is None:
        return []
    token = _live_token()
    return [
        UserSession(s.key, s.expiry, is_current(s.key, token), storage.decode_session(s.data))
        for s in await storage.store.sessions_of(owner)
    ]


async def logout_everywhere(request: web.Request) -> int:
    """End every other session of the request's owner, at once; this one stays.

    Returns:
        How many sessions were deleted; 0 if the session belongs to nobody.

    Raises:
        RuntimeError: If the app has no aiohttp-session middleware with a
            `PostgresStorage`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    storage = _storage(request, "logout_everywhere")
    owner = await session_owner(request)
    if owner is None:
        return 0
    ended = await storage.store.delete_owned(owner, keep=_live_token())
    logger.debug("logged out everywhere else: %d sessions deleted", ended)
    return ended


def _live_token() -> str | None:
    loaded = _current.get()
    return None if loaded is None else loaded.token
