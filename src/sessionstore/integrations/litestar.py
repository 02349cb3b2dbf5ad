"""Litestar stores and server-side sessions in PostgreSQL, on `AsyncStore`.

Install with ``pip install "sessionstore[litestar]"``, then::

    from litestar import Litestar

    from sessionstore.integrations.litestar import PostgresStore, SessionConfig

    root = PostgresStore.from_dsn(dsn, owners=True)  # no connection yet
    app = Litestar(
        route_handlers=[...],
        # Litestar enters the registered stores with the app: the pool opens at
        # startup and closes at shutdown.
        stores={"sessions": root.with_namespace("sessions")},
        middleware=[SessionConfig(max_age=3600).middleware],
    )

Two parts, usable apart:

- `PostgresStore`, a Litestar ``NamespacedStore``: the store behind ``app.stores``
  for any of Litestar's store users (server-side sessions, the response cache, rate
  limiting, your own code). Keys live in the sessions table as
  ``"<namespace>:<key>"``; ``with_namespace("x")`` nests (``"litestar/x:<key>"``), and
  `PostgresStore.delete_all` deletes the store's namespace and those nested in it.
  A value set without an expiry is kept until deleted: the row's expiry is
  `NO_EXPIRY` (the end of year 9999, as the expiry column is NOT NULL), which
  `PostgresStore.expires_in` reports as None.
- `SessionConfig` (its backend is `PostgresSessionBackend`): Litestar's server-side
  sessions, with SCS's rules instead of Litestar's own backend's. That backend
  generates an ID for every visitor and saves a session under whatever ID the
  cookie carries, so a planted or made-up cookie becomes a live session. Here:

  - Tokens are issued by the store (32 random bytes, url-safe base64, as SCS), saved
    with ``create`` (never over a live session). A cookie the store does not know
    (expired, deleted, made up, tampered with) gets an empty session, and a fresh
    token once something is stored in it: a token is never adopted.
  - An empty session writes nothing and sets no cookie; a session emptied
    (``request.session.clear()`` or ``request.clear_session()``) deletes its row and
    expires its cookie.
  - A session saved unchanged only has its expiry moved (``touch``): the data is
    not rewritten, and a session deleted meanwhile (logged out elsewhere) stays
    deleted. Every save slides the expiry to ``max_age``, as Litestar's backend
    does (so ``renew_on_access`` changes nothing).
  - `renew_token` (call it on login) gives the session a new token and deletes the
    old row; `login_session` does that and makes the session the user's (a store
    with ``owners=True``); `user_sessions` and `logout_everywhere` list and end the
    user's sessions.
  - Every response of a request the middleware handled carries ``Vary: Cookie``,
    and one that sets or clears the cookie ``Cache-Control: no-cache="Set-Cookie"``
    (both merged into the values already there), as SCS sends them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .._core import hash_token, validate_owner
from ._common import (
    OWNER_KEY,
    UserSession,
    cache_control_with_no_cache_set_cookie,
    create_fresh,
    is_token,
    missing_extra,
    owner_of,
    vary_with_cookie,
)

try:
    from litestar.connection import ASGIConnection
    from litestar.datastructures import Cookie, MutableScopeHeaders
    from litestar.exceptions import ImproperlyConfiguredException
    from litestar.middleware.session.server_side import (
        ServerSideSessionBackend,
        ServerSideSessionConfig,
    )
    from litestar.stores.base import NamespacedStore
    from litestar.types import Empty, Message, ScopeSession
    from litestar.utils.dataclass import extract_dataclass_items
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "litestar", exc) from exc

from psycopg_pool import AsyncConnectionPool

from ..store_async import AsyncStore

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = [
    "NO_EXPIRY",
    "PostgresSessionBackend",
    "PostgresStore",
    "SessionConfig",
    "UserSession",
    "login_session",
    "logout_everywhere",
    "renew_token",
    "session_owner",
    "user_sessions",
]

logger = logging.getLogger(__name__)

#: The expiry of a value set without one: the expiry column is NOT NULL, and no
#: real expiry is this late. `PostgresStore.expires_in` reports it as None, and
#: ``get(renew_for=...)`` leaves it as it is.
NO_EXPIRY = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)

#: Separates the namespace from the key, and nested namespaces from each other;
#: namespaces may hold neither, so every stored key has exactly one reading.
_KEY_SEPARATOR = ":"
_NAMESPACE_SEPARATOR = "/"


def _seconds(value: object, name: str) -> dt.timedelta | None:
    """An ``expires_in``/``renew_for`` as a timedelta; None (or 0) for none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | dt.timedelta):
        raise TypeError(f"{name} must be an int, a timedelta or None, not {type(value).__name__}")
    delta = value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)
    if delta < dt.timedelta(0):
        raise ValueError(f"{name} must not be negative")
    # Litestar's own stores treat 0 as "no expiry" (MemoryStore tests it for truth).
    return delta or None


class _Lifecycle:
    """The pool and store a `PostgresStore.from_dsn` store opened, shared by namespaces.

    Litestar enters every registered store; the namespaces of one root share this,
    so the pool opens on the first entry and closes on the last exit.
    """

    def __init__(self, pool: AsyncConnectionPool[Any], store: AsyncStore) -> None:
        self.pool = pool
        self.store = store
        self.entered = 0

    async def enter(self) -> None:
        if self.entered == 0:
            await self.pool.open(wait=True)
            await self.store.open()
        self.entered += 1

    async def exit(self) -> None:
        self.entered -= 1
        if self.entered == 0:
            try:
                await self.store.aclose()
            finally:
                await self.pool.close()


class PostgresStore(NamespacedStore):
    """A Litestar key/value store kept in the sessions table of an `AsyncStore`.

    Register it (or namespaces of it) in ``Litestar(stores=...)``. Built on an
    `AsyncStore`, it leaves that store and its pool to the application (open them in
    the app's lifespan); built with `from_dsn`, it opens and closes its own pool
    when Litestar enters and exits it with the app.

    Args:
        store: The store to keep the values in.
        namespace: The keys' namespace (default ``"litestar"``); None for none, which
            makes `delete_all` unavailable (it would have to empty the table).

    Raises:
        TypeError: If `store` is not an `AsyncStore`, or `namespace` not a str.
        ValueError: If `namespace` is empty or holds ``":"`` or ``"/"``.
    """

    __slots__ = ("_life", "store")

    def __init__(self, store: AsyncStore, *, namespace: str | None = "litestar") -> None:
        if not isinstance(store, AsyncStore):
            raise TypeError(f"store must be a sessionstore.AsyncStore, not {type(store).__name__}")
        self.store = store
        self.namespace: str | None = None if namespace is None else _check_namespace(namespace)
        self._life: _Lifecycle | None = None

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        namespace: str | None = "litestar",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        **options: Any,
    ) -> PostgresStore:
        """A store with its own pool, opened and closed with the app.

        Nothing connects now (no pool opens at import or construction): the pool
        opens when Litestar enters the store at startup (or ``async with store:``),
        and closes when the last of its namespaces is exited.

        Args:
            dsn: The PostgreSQL connection string.
            namespace: As for the constructor.
            min_size: The pool's minimum size.
            max_size: The pool's maximum size.
            timeout: How long a request waits for a connection before the store
                raises `sessionstore.DatabaseError` (the pool's ``timeout``).
            **options: `AsyncStore`'s options (``table``, ``schema``,
                ``hash_tokens``, ``owners``, ``cleanup``, ...).

        Returns:
            The store.
        """
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            open=False,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
        )
        store = AsyncStore(pool, **options)
        self = cls(store, namespace=namespace)
        self._life = _Lifecycle(pool, store)
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.store.name} namespace={self.namespace!r}>"

    def with_namespace(self, namespace: str) -> PostgresStore:
        """A store for a namespace nested in this one, on the same `AsyncStore`.

        Args:
            namespace: The child's name (no ``":"`` or ``"/"``).

        Returns:
            The child store; this store's `delete_all` deletes its keys too.

        Raises:
            TypeError: If `namespace` is not a str.
            ValueError: If it is empty or holds ``":"`` or ``"/"``.
        """
        child = _check_namespace(namespace)
        if self.namespace is not None:
            child = f"{self.namespace}{_NAMESPACE_SEPARATOR}{child}"
        store = type(self)(self.store, namespace=None)
        store.namespace = child  # nested: holds "/", which a namespace given by hand may not
        store._life = self._life
        return store

    async def __aenter__(self) -> None:
        """Open the pool (stores made with `from_dsn`; else nothing to do)."""
        if self._life is not None:
            await self._life.enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Close the pool once every namespace that entered has exited."""
        if self._life is not None:
            await self._life.exit()

    def key(self, key: str) -> str:
        """The key under which `key` is stored: prefixed with the namespace.

        Args:
            key: The key as Litestar gives it.

        Returns:
            ``"<namespace>:<key>"``, or `key` itself without a namespace.

        Raises:
            TypeError: If `key` is not a str.
        """
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        return key if self.namespace is None else f"{self.namespace}{_KEY_SEPARATOR}{key}"

    async def set(
        self,
        key: str,
        value: str | bytes,
        expires_in: int | dt.timedelta | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        """Set a value, replacing any (``commit``).

        Args:
            key: The key.
            value: The value (a str is stored as UTF-8).
            expires_in: Seconds (or a timedelta) until it expires; None or 0 keeps it
                until deleted.
            owner: Who the value belongs to (a store with ``owners=True``); None
                keeps the row's owner.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If the key is invalid, `expires_in` negative or the value
                larger than the store's ``max_data_size``.
            sessionstore.DatabaseError: If the database failed.
        """
        await self.store.commit(self.key(key), _bytes(value), _expiry(expires_in), owner=owner)

    async def create(
        self,
        key: str,
        value: str | bytes,
        expires_in: int | dt.timedelta | None = None,
        *,
        owner: str | None = None,
    ) -> bool:
        """Set a value unless a live one has the key (``create``).

        Args:
            key: The key.
            value: The value.
            expires_in: As for `set`.
            owner: As for `set`.

        Returns:
            False, with nothing changed, if a live value holds the key.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            sessionstore.DatabaseError: If the database failed.
        """
        return await self.store.create(
            self.key(key), _bytes(value), _expiry(expires_in), owner=owner
        )

    async def touch(self, key: str, expires_in: int | dt.timedelta | None) -> bool:
        """Move a live value's expiry without rewriting it (``touch``).

        Args:
            key: The key.
            expires_in: The new time to live; None or 0 for none.

        Returns:
            False, with nothing written, if the key names no live value.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            sessionstore.DatabaseError: If the database failed.
        """
        return await self.store.touch(self.key(key), _expiry(expires_in))

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        """Get a live value; with `renew_for`, renew its expiry first.

        A value kept without an expiry is not renewed (Litestar's contract). The
        renewal reads the expiry and then touches: two more round trips, and not
        atomic with a concurrent `set` of the same key (the later write wins).

        Args:
            key: The key.
            renew_for: If given, and the value has an expiry, it expires this long
                from now.

        Returns:
            The value, or None if the key names no live value.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If the key is invalid or `renew_for` negative.
            sessionstore.DatabaseError: If the database failed.
        """
        stored = self.key(key)
        renew = _seconds(renew_for, "renew_for")
        if renew is not None:
            expiry = await self.store.expiry(stored)
            if expiry is None:
                return None
            if expiry < NO_EXPIRY:
                await self.store.touch(stored, dt.datetime.now(dt.UTC) + renew)
        return await self.store.find(stored)

    async def delete(self, key: str) -> None:
        """Delete a value; a missing key is not an error.

        Raises:
            TypeError: If the key is not a str.
            ValueError: If the key is invalid.
            sessionstore.DatabaseError: If the database failed.
        """
        await self.store.delete(self.key(key))

    async def delete_all(self) -> None:
        """Delete every value of this namespace and of the namespaces nested in it.

        Raises:
            ImproperlyConfiguredException: If the store has no namespace, or hashes
                its keys (``hash_tokens=True``: a hashed key keeps no namespace to
                match), before any SQL.
            sessionstore.DatabaseError: If the database failed.
        """
        if self.namespace is None:
            raise ImproperlyConfiguredException(
                "delete_all needs a namespace: without one it would empty the whole table"
            )
        if self.store._core.hash_tokens:
            raise ImproperlyConfiguredException(
                "delete_all needs an AsyncStore with hash_tokens=False: a hashed key keeps "
                "no namespace to match (delete the keys one by one instead)"
            )
        deleted = await self.store.delete_prefix(self.namespace + _KEY_SEPARATOR)
        deleted += await self.store.delete_prefix(self.namespace + _NAMESPACE_SEPARATOR)
        logger.debug("delete_all: %d values deleted", deleted)

    async def exists(self, key: str) -> bool:
        """Whether a live value has the key.

        Raises:
            TypeError: If the key is not a str.
            ValueError: If the key is invalid.
            sessionstore.DatabaseError: If the database failed.
        """
        return await self.store.exists(self.key(key))

    async def expires_in(self, key: str) -> int | None:
        """Seconds until the value expires (rounded down); None if missing or kept forever.

        Raises:
            TypeError: If the key is not a str.
            ValueError: If the key is invalid.
            sessionstore.DatabaseError: If the database failed.
        """
        expiry = await self.store.expiry(self.key(key))
        if expiry is None or expiry >= NO_EXPIRY:
            return None
        return max(0, int((expiry - dt.datetime.now(dt.UTC)).total_seconds()))

    def stored_key(self, owned_key: str) -> str | None:
        """The key within this namespace of a row `sessions_of` listed; None if not ours.

        With ``hash_tokens`` the stored key is a hash: it is returned as it is.
        """
        if self.store._core.hash_tokens:
            return owned_key
        prefix = self.key("")
        return owned_key[len(prefix) :] if owned_key.startswith(prefix) else None

    def is_key_of(self, owned_key: str, key: str) -> bool:
        """Whether a row `sessions_of` listed stores `key` of this namespace."""
        stored = self.key(key)
        return owned_key in (stored, hash_token(stored))


def _check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if not namespace:
        raise ValueError("namespace must not be empty")
    if _KEY_SEPARATOR in namespace or _NAMESPACE_SEPARATOR in namespace:
        raise ValueError(
            f"namespace must not contain {_KEY_SEPARATOR!r} or {_NAMESPACE_SEPARATOR!r}"
        )
    return namespace


def _bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"value must be str or bytes, not {type(value).__name__}")


def _expiry(expires_in: object) -> dt.datetime:
    delta = _seconds(expires_in, "expires_in")
    return NO_EXPIRY if delta is None else dt.datetime.now(dt.UTC) + delta


# --------------------------------------------------------------------------- sessions

#: Where the backend keeps what it loaded for a request, in the ASGI scope.
_SCOPE_KEY = "sessionstore.litestar"


@dataclass
class _Loaded:
    """What the backend knows of a request's session."""

    token: str | None = None  # the cookie's token, if it named a live session
    data: bytes | None = None  # the data the store had for it
    had_cookie: bool = False
    renew: bool = False  # issue a fresh token at the save (`renew_token`)
    store: PostgresStore | None = None  # the store the backend loaded from


def _loaded(connection: ASGIConnection[Any, Any, Any, Any]) -> _Loaded:
    scope = cast("dict[str, Any]", connection.scope)
    loaded = scope.get(_SCOPE_KEY)
    if not isinstance(loaded, _Loaded):
        loaded = scope[_SCOPE_KEY] = _Loaded()
    return loaded


class PostgresSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side session backend with SCS's token rules.

    Made by `SessionConfig`; see the module's description for what it does
    differently from Litestar's own backend.
    """

    config: SessionConfig

    def _store(self, app: Litestar) -> PostgresStore:
        store = self.config.get_store_from_app(app)
        if not isinstance(store, PostgresStore):
            raise ImproperlyConfiguredException(
                f"SessionConfig needs a PostgresStore registered as {self.config.store!r}"
                f" in Litestar(stores=...), not {type(store).__name__}"
            )
        return store

    # The middleware calls this after loading; Litestar's own backend generates an ID
    # here for every visitor. This one has an ID only for a session the store knows.
    def get_session_id(  # type: ignore[override]
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> str | None:
        """The token of the request's session, if the store knows it; else None.

        Args:
            connection: The request.

        Returns:
            The token, or None for a session not saved yet.
        """
        return _loaded(connection).token

    async def load_from_connection(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> dict[str, Any]:
        """Read the session the cookie names; an empty one if the store lacks it.

        Args:
            connection: The request.

        Returns:
            The session's data.

        Raises:
            sessionstore.DatabaseError: If the store failed.
        """
        loaded = _loaded(connection)
        loaded.store = store = self._store(connection.scope["app"])
        value = connection.cookies.get(self.config.key)
        loaded.had_cookie = value is not None
        if not is_token(value):
            if value is not None:
                logger.debug("ignoring a session cookie that is not a token; new session")
            return {}
        assert value is not None
        data = await store.get(value)
        if data is None:
            logger.debug("no live session for the cookie's token; new session")
            return {}
        try:
            session = self.deserialize_data(data)
        except Exception:  # msgspec's DecodeError, or any other of a custom decoder
            session = None
        if not isinstance(session, dict):
            logger.warning("stored session data is not a JSON object; starting a new session")
            return {}
        loaded.token, loaded.data = value, data
        return session

    async def store_in_message(
        self,
        scope_session: ScopeSession,
        message: Message,
        connection: ASGIConnection[Any, Any, Any, Any],
    ) -> None:
        """Save the session and set (or expire) its cookie, with SCS's headers.

        Args:
            scope_session: The session as the handler left it.
            message: The ``http.response.start`` message.
            connection: The request.

        Raises:
            ValueError: If the session is larger than the store's ``max_data_size``.
            sessionstore.DatabaseError: If the store failed (Litestar then answers
                500: the response has not started).
        """
        loaded = _loaded(connection)
        store = self._store(connection.scope["app"])
        headers = MutableScopeHeaders.from_message(message)
        _merge(headers, "Vary", vary_with_cookie)
        if scope_session is Empty or not scope_session:
            if loaded.token is not None:
                await store.delete(loaded.token)
                logger.debug("session emptied: row deleted")
                loaded.token = None
            if loaded.had_cookie:
                self._expire_cookie(headers)
            return
        data = self.serialize_data(scope_session, connection.scope)
        owner = owner_of(scope_session)
        token = loaded.token
        if token is not None and not loaded.renew:
            if loaded.data is not None and _decode(loaded.data) == scope_session:
                if not await store.touch(token, self.config.max_age):
                    # Deleted since it was read (logged out on another device, or
                    # expired): writing it back would revive it.
                    logger.debug("session gone since it was read: not saved, cookie expired")
                    self._expire_cookie(headers)
                    return
            else:
                await store.set(token, data, self.config.max_age, owner=owner)
        else:
            if token is not None:
                # Delete first: if the save then fails, the old token is dead anyway.
                await store.delete(token)
                logger.debug("new token for the session: old row deleted")
            token = await create_fresh(
                lambda fresh: store.create(fresh, data, self.config.max_age, owner=owner)
            )
            loaded.token, loaded.renew = token, False
        loaded.data = data
        self._set_cookie(headers, token, max_age=self.config.max_age)

    def _cookie_params(self) -> dict[str, Any]:
        return dict(
            extract_dataclass_items(
                self.config,
                exclude_none=True,
                include={"path", "domain", "secure", "httponly", "samesite"},
            )
        )

    def _set_cookie(self, headers: MutableScopeHeaders, value: str, *, max_age: int) -> None:
        cookie = Cookie(key=self.config.key, value=value, max_age=max_age, **self._cookie_params())
        headers.add("Set-Cookie", cookie.to_header(header=""))
        _merge(headers, "Cache-Control", cache_control_with_no_cache_set_cookie)

    def _expire_cookie(self, headers: MutableScopeHeaders) -> None:
        self._set_cookie(headers, "", max_age=0)


def _merge(headers: MutableScopeHeaders, name: str, merge: Any) -> None:
    """Set header `name` to what `merge` makes of its values, if that changes it."""
    value = merge(headers.getall(name, []))
    if value is not None:
        headers[name] = value


@dataclass
class SessionConfig(ServerSideSessionConfig):
    """Litestar's ``ServerSideSessionConfig``, with `PostgresSessionBackend` as backend.

    Use its ``middleware`` in ``Litestar(middleware=[...])``; the store registered
    under `store` (default ``"sessions"``) must be a `PostgresStore`. Litestar's
    cookie options apply (``key``, ``max_age``, ``path``, ``domain``, ``secure``,
    ``httponly``, ``samesite``); ``session_id_bytes`` and ``renew_on_access`` do not
    (tokens are SCS's; every save slides the expiry).
    """

    _backend_class = PostgresSessionBackend


# --------------------------------------------------------------------------- helpers


def _session(connection: ASGIConnection[Any, Any, Any, Any], caller: str) -> dict[str, Any]:
    if _SCOPE_KEY not in connection.scope:
        raise RuntimeError(f"{caller}() needs SessionConfig(...).middleware")
    session = connection.scope.get("session")
    if session is Empty or not isinstance(session, dict):
        session = {}
        connection.set_session(session)
    return session


def _postgres_store(connection: ASGIConnection[Any, Any, Any, Any], caller: str) -> PostgresStore:
    _session(connection, caller)
    store = _loaded(connection).store
    if store is None:  # the backend names its store at the load; this is a safety net
        raise RuntimeError(f"{caller}() needs SessionConfig(...).middleware")
    return store


def renew_token(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Give the request's session a new token when the response saves it.

    The old token's row is deleted then, and the data is kept. Call it on login
    (session fixation defence).

    Args:
        connection: The request.

    Raises:
        RuntimeError: If the app has no `SessionConfig` middleware.
    """
    _session(connection, "renew_token")
    _loaded(connection).renew = True


def login_session(connection: ASGIConnection[Any, Any, Any, Any], owner: str) -> None:
    """Log the request's session in as `owner`: a new token, owned by the user.

    Needs a `PostgresStore` on an `AsyncStore` with ``owners=True``. The owner is
    kept in the session (under ``"_session_owner"``), so every save keeps the row
    owned; clearing the session (logout) drops it.

    Args:
        connection: The request.
        owner: The user id, as text.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        RuntimeError: If the app has no `SessionConfig` middleware.
    """
    validate_owner(owner)
    session = _session(connection, "login_session")
    _loaded(connection).renew = True
    session[OWNER_KEY] = owner


def session_owner(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The user the request's session belongs to (set by `login_session`), or None.

    Raises:
        RuntimeError: If the app has no `SessionConfig` middleware.
    """
    return owner_of(_session(connection, "session_owner"))


async def user_sessions(connection: ASGIConnection[Any, Any, Any, Any]) -> list[UserSession]:
    """List the live sessions of the request's owner ("where am I logged in").

    Returns:
        The sessions, soonest to expire first, the current one marked `current`;
            empty if the session belongs to nobody. Each `UserSession.key` is the
            token (the stored hash with ``hash_tokens``): show only a prefix.

    Raises:
        RuntimeError: If the app has no `SessionConfig` middleware.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    owner = session_owner(connection)
    if owner is None:
        return []
    store = _postgres_store(connection, "user_sessions")
    token = _loaded(connection).token
    sessions = []
    for owned in await store.store.sessions_of(owner):
        key = store.stored_key(owned.key)
        if key is None:
            continue  # another namespace's row
        current = token is not None and store.is_key_of(owned.key, token)
        sessions.append(UserSession(key, owned.expiry, current, _decode(owned.data)))
    return sessions


async def logout_everywhere(connection: ASGIConnection[Any, Any, Any, Any]) -> int:
    """End every other session of the request's owner, at once; this one stays.

    Returns:
        How many sessions were deleted; 0 if the session belongs to nobody.

    Raises:
        RuntimeError: If the app has no `SessionConfig` middleware.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    owner = session_owner(connection)
    if owner is None:
        return 0
    store = _postgres_store(connection, "logout_everywhere")
    token = _loaded(connection).token
    keep = None if token is None else store.key(token)
    ended = await store.store.delete_owned(owner, keep=keep)
    logger.debug("logged out everywhere else: %d sessions deleted", ended)
    return ended


def _decode(data: bytes) -> dict[str, Any]:
    try:
        decoded = PostgresSessionBackend.deserialize_data(data)
    except Exception:  # msgspec's DecodeError
        return {}
    return decoded if isinstance(decoded, dict) else {}
