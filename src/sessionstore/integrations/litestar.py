"""Litestar stores and server-side sessions in PostgreSQL: docs/integrations-litestar.md."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .._core import OwnedSession, validate_owner
from ..manager import (
    DEFAULT_RENEW_AFTER,
    DEFAULT_ROTATE_GRACE,
    Device,
    Loaded,
    SessionManager,
    Steps,
    UserSession,
    arun,
    owner_of,
    secure_by_default,
)
from ._common import (
    cache_control_with_no_cache_set_cookie,
    merge_header,
    missing_extra,
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
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "litestar", exc) from exc

from psycopg_pool import AsyncConnectionPool

from ..store_async import AsyncStore

__all__ = [
    "NO_EXPIRY",
    "PostgresSessionBackend",
    "PostgresStore",
    "SessionConfig",
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

#: The expiry of a value set without one (the expiry column is NOT NULL);
#: `PostgresStore.expires_in` reports it as None and ``renew_for`` leaves it alone.
NO_EXPIRY = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)

#: Separate the namespace from the key, and nested namespaces from each other;
#: namespaces may hold neither, so every stored key has exactly one reading.
_KEY_SEPARATOR = ":"
_NAMESPACE_SEPARATOR = "/"

_Connection = ASGIConnection[Any, Any, Any, Any]
T = TypeVar("T")


class _Lifecycle:
    """The pool and store of a `PostgresStore.from_dsn`, opened by the first namespace entered."""

    def __init__(self, pool: AsyncConnectionPool[Any], store: AsyncStore) -> None:
        self.pool, self.store, self.entered = pool, store, 0

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
    """A Litestar key/value store in the sessions table of an `AsyncStore`.

    A namespace must be a non-empty str without ``":"`` or ``"/"``.
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
        """A store with its own pool, opened when Litestar enters the store (not before a fork).

        `min_size`, `max_size` and `timeout` are the pool's; `options` the `AsyncStore`'s.
        """
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, open=False, min_size=min_size, max_size=max_size, timeout=timeout,
            kwargs={"autocommit": True},
        )  # fmt: skip
        store = AsyncStore(pool, **options)
        self = cls(store, namespace=namespace)
        self._life = _Lifecycle(pool, store)
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.store.name} namespace={self.namespace!r}>"

    def with_namespace(self, namespace: str) -> PostgresStore:
        """A store for a namespace nested in this one; this one's `delete_all` covers it."""
        child = _check_namespace(namespace)
        if self.namespace is not None:
            child = f"{self.namespace}{_NAMESPACE_SEPARATOR}{child}"
        store = type(self)(self.store, namespace=None)
        store.namespace = child  # nested: holds "/", which a namespace given by hand may not
        store._life = self._life
        return store

    async def __aenter__(self) -> None:
        """Open the pool of a `from_dsn` store."""
        if self._life is not None:
            await self._life.enter()

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the pool once every namespace that entered has exited."""
        if self._life is not None:
            await self._life.exit()

    def key(self, key: str) -> str:
        """The stored key of `key`: ``"<namespace>:<key>"``."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        return key if self.namespace is None else f"{self.namespace}{_KEY_SEPARATOR}{key}"

    # Litestar's Store API (litestar.stores.base.Store). Each raises TypeError or
    # ValueError for an invalid argument, and sessionstore.DatabaseError.

    async def set(
        self,
        key: str,
        value: str | bytes,
        expires_in: int | dt.timedelta | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        """Set a value (a str as UTF-8), replacing any; no `expires_in` (or 0): never expires.

        `owner` (a store with ``owners=True``) is who it belongs to; None keeps the row's.
        """
        stored, data, delta = self.key(key), _bytes(value), _seconds(expires_in, "expires_in")
        expiry = NO_EXPIRY if delta is None else dt.datetime.now(dt.UTC) + delta
        await self.store.commit(stored, data, expiry, owner=owner)

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        """A live value, or None; with `renew_for`, its expiry (if it has one) moved first."""
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
        """Delete a value; a missing key is not an error."""
        await self.store.delete(self.key(key))

    async def delete_all(self) -> None:
        """Delete every value of this namespace and of those nested in it (not with hash_tokens)."""
        if self.namespace is None:
            raise ImproperlyConfiguredException(
                "delete_all needs a namespace: without one it would empty the whole table"
            )
        if self.store.hash_tokens:
            raise ImproperlyConfiguredException(
                "delete_all needs an AsyncStore with hash_tokens=False: a hashed key keeps "
                "no namespace to match (delete the keys one by one instead)"
            )
        deleted = await self.store.delete_prefix(self.namespace + _KEY_SEPARATOR)
        deleted += await self.store.delete_prefix(self.namespace + _NAMESPACE_SEPARATOR)
        logger.debug("delete_all: %d values deleted", deleted)

    async def exists(self, key: str) -> bool:
        """Whether a live value has the key."""
        return await self.store.exists(self.key(key))

    async def expires_in(self, key: str) -> int | None:
        """Whole seconds until the value expires; None if it is missing or never expires."""
        expiry = await self.store.expiry(self.key(key))
        if expiry is None or expiry >= NO_EXPIRY:
            return None
        return max(0, int((expiry - dt.datetime.now(dt.UTC)).total_seconds()))


def _check_namespace(namespace: object) -> str:
    """A namespace given by hand, checked."""
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
    """A value as stored: a str as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"value must be str or bytes, not {type(value).__name__}")


def _seconds(value: object, name: str) -> dt.timedelta | None:
    """An ``expires_in``/``renew_for`` as a timedelta; None (or 0, as Litestar has it): none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | dt.timedelta):
        raise TypeError(f"{name} must be an int, a timedelta or None, not {type(value).__name__}")
    delta = value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)
    if delta < dt.timedelta(0):
        raise ValueError(f"{name} must not be negative")
    return delta or None


# --------------------------------------------------------------------------- sessions


#: The store calls the manager makes with a session's token first: keyed in the namespace.
_BY_TOKEN = frozenset({"find_versioned", "update_versioned", "touch", "update", "create", "delete"})


class _Namespaced:
    """The `AsyncStore` as the manager drives it, a session's token keyed in the namespace."""

    def __init__(self, store: PostgresStore) -> None:
        self.key, self.inner = store.key, store.store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in _BY_TOKEN:
            return method  # by owner, or a stored key: as they are

        async def keyed(token: str, *args: Any, **kwargs: Any) -> Any:
            return await method(self.key(token), *args, **kwargs)

        return keyed

    async def sessions_of(self, owner: str) -> list[OwnedSession]:
        """The owner's sessions in this namespace (in every one with ``hash_tokens``)."""
        owned = await self.inner.sessions_of(owner)
        prefix = self.key("")
        return [s for s in owned if self.inner.hash_tokens or s.key.startswith(prefix)]

    async def rotate(self, token: str, *, grace: dt.timedelta) -> str | None:
        prefix = self.key("")  # the new token in the namespace too
        new = await self.inner.rotate(prefix + token, grace=grace, prefix=prefix)
        return None if new is None else new.removeprefix(prefix)


#: Where the backend keeps a request's session state, in the ASGI scope.
_SCOPE_KEY = "sessionstore.litestar"


@dataclass
class _State:
    """A request's session, as loaded, and the store it came from."""

    loaded: Loaded
    store: PostgresStore
    manager: SessionManager
    renew: bool = False  # issue a new token at the save

    @property
    def token(self) -> str | None:
        """The token of a live session, or None."""
        return self.loaded.token if self.loaded.found else None

    def sessions(self) -> AsyncStore:
        """The store, keyed in the namespace, as `arun` takes it."""
        return cast("AsyncStore", _Namespaced(self.store))  # duck-typed: the calls arun makes


def _loads(data: bytes) -> dict[str, Any] | None:
    """Decode stored session data; None if it does not decode."""
    try:
        decoded = PostgresSessionBackend.deserialize_data(data)
    except Exception:  # msgspec's DecodeError, or Litestar's SerializationException
        return None
    return decoded if isinstance(decoded, dict) else None


class PostgresSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side session backend, its loads and saves decided by `SessionManager`."""

    config: SessionConfig

    def get_session_id(self, connection: _Connection) -> str | None:  # type: ignore[override]
        """The token of the request's session; None for one not stored (yet)."""
        state = connection.scope.get(_SCOPE_KEY)
        return state.token if isinstance(state, _State) else None

    async def load_from_connection(self, connection: _Connection) -> dict[str, Any]:
        """Load the session the cookie names; an empty one if there is none."""
        store = self.config.get_store_from_app(connection.scope["app"])
        if not isinstance(store, PostgresStore):
            raise ImproperlyConfiguredException(
                f"SessionConfig needs a PostgresStore registered as {self.config.store!r}"
                f" in Litestar(stores=...), not {type(store).__name__}"
            )
        state = _State(Loaded(None, False), store, self.config.manager)
        state.loaded = await arun(
            self.config.manager.load(connection.cookies.get(self.config.key)), state.sessions()
        )
        cast("dict[str, Any]", connection.scope)[_SCOPE_KEY] = state
        return state.loaded.data

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: _Connection
    ) -> None:
        """Save the session as the response starts; set or delete its cookie, add the headers."""
        state = _state(connection, "SessionConfig")
        data = scope_session if isinstance(scope_session, dict) else {}
        client = connection.client
        device = Device(client and client.host, connection.headers.get("user-agent"))
        save = self.config.manager.save(state.loaded, data, renew=state.renew, device=device)
        outcome = await arun(save, state.sessions())
        headers = MutableScopeHeaders.from_message(message)
        merge_header(headers, "Vary", vary_with_cookie)
        if not outcome.cookie_changed:
            return
        max_age = (outcome.set_cookie and outcome.max_age) or 0
        config = self.config
        secure = config.secure
        if secure is None:
            secure = secure_by_default(connection.headers.get("host"))
        cookie = Cookie(
            key=config.key, value=outcome.token or "", max_age=max_age, path=config.path,
            domain=config.domain, secure=secure, httponly=config.httponly, samesite=config.samesite,
        )  # fmt: skip
        headers.add("Set-Cookie", cookie.to_header(header=""))
        merge_header(headers, "Cache-Control", cache_control_with_no_cache_set_cookie)


@dataclass
class SessionConfig(ServerSideSessionConfig):
    """Litestar's server-side session config on a `PostgresStore`: docs/integrations-litestar.md."""

    # Litestar's is a bool defaulting to False; None here means "by the request's host".
    secure: bool | None = None  # type: ignore[assignment]
    absolute_max_age: int | None = None
    renew_after: float = DEFAULT_RENEW_AFTER
    rotate_every: float | dt.timedelta | None = None
    rotate_grace: float | dt.timedelta = DEFAULT_ROTATE_GRACE
    record_devices: bool = False

    _backend_class = PostgresSessionBackend

    def __post_init__(self) -> None:
        super().__post_init__()
        self.manager = SessionManager(
            PostgresSessionBackend.serialize_data,
            _loads,
            idle_timeout=self.max_age,
            lifetime=self.absolute_max_age,
            renew_after=self.renew_after,
            rotate_every=self.rotate_every,
            rotate_grace=self.rotate_grace,
            record_devices=self.record_devices,
        )


# --------------------------------------------------------------------------- helpers


def _state(connection: _Connection, caller: str) -> _State:
    """The request's session state, checked."""
    state = connection.scope.get(_SCOPE_KEY)
    if not isinstance(state, _State):
        raise RuntimeError(f"{caller}() needs SessionConfig(...).middleware")
    return state


def _session(connection: _Connection) -> dict[str, Any]:
    """The request's session dict, made if the handler set it to Empty."""
    session = connection.scope.get("session")
    if session is Empty or not isinstance(session, dict):
        session = {}
        connection.set_session(session)
    return session


def renew_token(connection: _Connection) -> None:
    """Have the response save the session under a new token, deleting the old row."""
    _state(connection, "renew_token").renew = True


def login_session(connection: _Connection, owner: str) -> None:
    """`SessionManager.log_in` for the request's session, under a new token."""
    validate_owner(owner)
    _state(connection, "login_session").renew = True
    SessionManager.log_in(_session(connection), owner)


def session_owner(connection: _Connection) -> str | None:
    """The user the request's session belongs to (set by `login_session`), or None."""
    _state(connection, "session_owner")
    return owner_of(_session(connection))


def signed_in_within(connection: _Connection, within: dt.timedelta | float) -> bool:
    """`SessionManager.signed_in_within` for the request's session."""
    state = _state(connection, "signed_in_within")
    return state.manager.signed_in_within(_session(connection), within)


async def _owners(
    connection: _Connection,
    caller: str,
    steps: Callable[[SessionManager, str | None, str | None], Steps[T]],
) -> T:
    """Run a per-user decision on the session's owner and stored key."""
    state, owner = _state(connection, caller), session_owner(connection)
    key = None if state.token is None else state.store.key(state.token)
    return await arun(steps(state.manager, owner, key), state.sessions())


async def user_sessions(connection: _Connection) -> list[UserSession]:
    """`SessionManager.sessions` for the session's owner, in this store's namespace.

    With ``hash_tokens`` a stored key keeps no namespace: every namespace's are listed.
    """
    return await _owners(connection, "user_sessions", lambda m, o, k: m.sessions(o, k))


async def revoke(connection: _Connection, session_id: str) -> bool:
    """`SessionManager.revoke` for the request's session's owner."""
    return await _owners(connection, "revoke", lambda m, o, k: m.revoke(o, session_id))


async def logout_everywhere(connection: _Connection) -> int:
    """`SessionManager.log_out_everywhere` for the request's session's owner, but this one."""
    return await _owners(
        connection, "logout_everywhere", lambda m, o, k: m.log_out_everywhere(o, k)
    )
