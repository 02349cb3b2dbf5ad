"""Starlette and FastAPI sessions in PostgreSQL: a ``starsessions`` store on `AsyncStore`.

Install with ``pip install "sessionstore[starlette]"``, then::

    from psycopg_pool import AsyncConnectionPool
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware

    from sessionstore import AsyncStore
    from sessionstore.integrations.starlette import PostgresStore

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
- `renew_token` gives the session a new token and deletes the old row, keeping the
  data: call it on login (session fixation defence).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging

from ._common import DEFAULT_SESSION_ONLY_TTL, is_token, missing_extra, new_token, to_timedelta

try:
    from starlette.requests import HTTPConnection
    from starsessions import SessionStore, get_session_handler, is_loaded, load_session
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "starlette", exc) from exc

from ..store_async import AsyncStore

__all__ = ["PostgresStore", "renew_token"]

logger = logging.getLogger(__name__)

#: The last token this request's context read, and whether the store had it. `write`
#: trusts a token only if the store had it; this spares it a second query when the
#: read happened in the same context (the usual case), and it queries otherwise.
_last_read: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar(
    "sessionstore_last_read", default=None
)


class PostgresStore(SessionStore):
    """A starsessions ``SessionStore`` that keeps sessions in PostgreSQL.

    Pass it to starsessions' ``SessionMiddleware(store=...)``. The `AsyncStore`
    (and its pool) is the application's to open and close, e.g. in its lifespan.

    Args:
        store: The store to keep sessions in.
        session_only_ttl: How long the row of a browser-session cookie's session
            (``lifetime=0``) lives after its last save: a `datetime.timedelta` or
            seconds (default 24 hours).

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
        _last_read.set((session_id, data is not None))
        if data is None:
            logger.debug("no live session for the cookie's token; new session")
            return b""
        return data

    async def write(self, session_id: str, data: bytes, lifetime: int, ttl: int) -> str:
        """Save a session; return its token, which is new unless the store had it.

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
        token = session_id if await self._issued_and_live(session_id) else new_token()
        seconds = self.session_only_ttl if lifetime <= 0 else dt.timedelta(seconds=ttl)
        await self.store.commit(token, data, dt.datetime.now(dt.UTC) + seconds)
        _last_read.set((token, True))
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
            _last_read.set((session_id, False))
            logger.debug("session removed")

    async def _issued_and_live(self, session_id: str) -> bool:
        """Tell whether the store has a live session under this token."""
        if not is_token(session_id):
            return False  # starsessions' own ID for a new session, or garbage
        last = _last_read.get()
        if last is not None and last[0] == session_id:
            return last[1]
        return await self.store.find(session_id) is not None


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
