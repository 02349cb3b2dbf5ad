"""Django sessions in PostgreSQL: a session engine on `Store` and `AsyncStore`.

Install with ``pip install "sessionstore[django]"``, create the table once (``python
-m sessionstore migrate --dsn ...``, with ``--owners`` for sessions per user), then in
``settings.py``::

    SESSION_ENGINE = "sessionstore.integrations.django"
    SESSIONSTORE = {"owners": True}  # every key is optional; see below
    MIDDLEWARE = [
        # Django's SessionMiddleware, plus SCS's Cache-Control on a cookie change:
        "sessionstore.integrations.django.SessionMiddleware",
        ...
    ]

`SessionStore` is a ``SessionBase`` with the semantics of Django's ``db`` backend:
``load`` gives an empty session (and forgets the key) when the row is missing,
expired or does not decode; ``save(must_create=True)`` raises ``CreateError`` on a
taken key; ``save()`` of a session deleted meanwhile raises ``UpdateError`` (Django's
middleware answers ``SessionInterrupted``, a 400); ``cycle_key`` deletes the old row;
``clear_expired`` (``manage.py clearsessions``) runs the store's batched purge. The
data is Django's own encoding (signed with ``SECRET_KEY``, ``SESSION_SERIALIZER``),
the expiry Django's (``SESSION_COOKIE_AGE``, ``set_expiry``), and every
``SESSION_COOKIE_*`` setting applies, as with any engine. Django 5.1's async methods
(``aload``, ``asave``, ``acycle_key``, ... and so ``alogin``/``alogout``) run on
`AsyncStore`, without a thread. A database failure raises
`sessionstore.DatabaseError`: Django's 500 page, never an empty session.

Differences from the ``db`` backend, all of them savings: a new key is saved with one
``INSERT ... ON CONFLICT`` (no "does it exist?" query first), an update is one
``UPDATE`` (no transaction around it), and the rows live in the SCS table, not in
``django_session`` (no ORM, no migration, no model).

The ``SESSIONSTORE`` setting (a dict; any key may be left out):

- ``dsn``: the PostgreSQL connection string. Default: built from
  ``DATABASES[database]`` (``NAME``, ``USER``, ``PASSWORD``, ``HOST``, ``PORT`` and the
  libpq parameters among its ``OPTIONS``), which must be PostgreSQL.
- ``database``: the ``DATABASES`` alias to build the DSN from (default ``"default"``).
- ``table``, ``schema``, ``hash_tokens``, ``owners``: as for `Store`.
- ``min_size``, ``max_size``, ``timeout``: the pools' sizes and how long a request
  waits for a connection (default 1, 10 and 30 seconds).
- ``prepare_threshold``: psycopg's (default 5); None behind PgBouncer older than 1.21
  in transaction mode.

Pools are opened on first use, in the process that uses them: one
``ConnectionPool`` per process for the sync methods, and one ``AsyncConnectionPool``
per event loop for the async ones (an ASGI server runs one loop). Nothing connects at
import or in ``django.setup()``, so ``gunicorn --preload`` forks before any connection
exists. The sync pool closes at exit; wrap an ASGI application in `with_lifespan` to
close the async one when the server stops.

Sessions per user (``owners=True``): the owner of a row is the session's
``_auth_user_id`` (what ``django.contrib.auth.login`` stores), written with every save.
`sessions_of` lists a user's live sessions, `logout_everywhere` ends them (but the
current one, if asked) and `revoke` ends one of them; each has an ``a``-prefixed async
twin.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import logging
import os
import re
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .._core import MAX_TOKEN_LENGTH, validate_owner
from ..cleanup import NoCleanup
from ..store import Store
from ..store_async import AsyncStore
from ._common import (
    UserSession,
    cache_control_with_no_cache_set_cookie,
    listing,
    missing_extra,
)

try:
    from django.conf import settings
    from django.contrib.auth import SESSION_KEY
    from django.contrib.sessions.backends.base import (
        VALID_KEY_CHARS,
        CreateError,
        SessionBase,
        UpdateError,
    )
    from django.contrib.sessions.middleware import SessionMiddleware as _DjangoSessionMiddleware
    from django.core import signing
    from django.core.exceptions import ImproperlyConfigured
    from django.core.signals import setting_changed
    from django.http import HttpRequest, HttpResponse
    from django.utils import timezone
    from django.utils.crypto import get_random_string
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "django", exc) from exc

__all__ = [
    "SessionMiddleware",
    "SessionStore",
    "UserSession",
    "aclose",
    "alogout_everywhere",
    "arevoke",
    "asessions_of",
    "astore",
    "close",
    "logout_everywhere",
    "revoke",
    "sessions_of",
    "store",
    "with_lifespan",
]

logger = logging.getLogger(__name__)

#: What a session key may look like to be looked up: Django's own rule (at least 8
#: characters) and only url-safe characters, so an odd cookie (quoted, with escapes or
#: NUL) is a new session at once and never reaches the store's validation or SQL.
#: Django's keys (32 of ``[a-z0-9]``) and SCS's tokens (43 url-safe base64) both pass.
_KEY_RE = re.compile(rf"[A-Za-z0-9_-]{{8,{MAX_TOKEN_LENGTH}}}")

#: How many fresh keys `SessionStore.create` tries. Two 165-bit random keys never
#: collide in practice; the bound turns a broken random source into an error instead
#: of an endless loop.
_CREATE_ATTEMPTS = 10

#: Keys of ``DATABASES[...]["OPTIONS"]`` that are Django's or psycopg's, not libpq's.
_NOT_CONNINFO = frozenset(
    {
        "assume_role",
        "context",
        "cursor_factory",
        "isolation_level",
        "pool",
        "prepare_threshold",
        "server_side_binding",
    }
)

_SETTING = "SESSIONSTORE"

#: How long `close` waits for an async pool closing in another thread's loop.
_CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class _Config:
    """The ``SESSIONSTORE`` setting, checked."""

    dsn: str
    table: str = "sessions"
    schema: str | None = None
    hash_tokens: bool = False
    owners: bool = False
    min_size: int = 1
    max_size: int = 10
    timeout: float = 30.0
    connect_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls) -> _Config:
        """Read and check ``settings.SESSIONSTORE``.

        Raises:
            ImproperlyConfigured: If it is not a dict, has an unknown key or a value
                of the wrong type, or no DSN can be had.
        """
        raw = getattr(settings, _SETTING, {})
        if not isinstance(raw, dict):
            raise ImproperlyConfigured(f"settings.{_SETTING} must be a dict")
        known = {
            "dsn",
            "database",
            "table",
            "schema",
            "hash_tokens",
            "owners",
            "min_size",
            "max_size",
            "timeout",
            "prepare_threshold",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ImproperlyConfigured(
                f"settings.{_SETTING} has unknown keys {unknown}; the keys are {sorted(known)}"
            )
        checks: list[tuple[str, type | tuple[type, ...]]] = [
            ("dsn", str),
            ("database", str),
            ("table", str),
            ("schema", (str, type(None))),
            ("hash_tokens", bool),
            ("owners", bool),
            ("min_size", int),
            ("max_size", int),
            ("timeout", (int, float)),
            ("prepare_threshold", (int, type(None))),
        ]
        for key, kind in checks:
            value = raw.get(key)
            if key in raw and (not isinstance(value, kind) or _is_bool_for_number(value, kind)):
                raise ImproperlyConfigured(
                    f"settings.{_SETTING}[{key!r}] has the wrong type: {type(value).__name__}"
                )
        min_size, max_size = raw.get("min_size", 1), raw.get("max_size", 10)
        if min_size < 0 or max_size < max(min_size, 1):
            raise ImproperlyConfigured(
                f"settings.{_SETTING}: need 0 <= min_size <= max_size and max_size >= 1"
            )
        if raw.get("timeout", 30.0) <= 0:
            raise ImproperlyConfigured(f"settings.{_SETTING}['timeout'] must be positive")
        dsn = raw["dsn"] if "dsn" in raw else _dsn_of_database(raw.get("database", "default"))
        kwargs: dict[str, Any] = {"autocommit": True}
        if "prepare_threshold" in raw:
            kwargs["prepare_threshold"] = raw["prepare_threshold"]
        return cls(
            dsn=dsn,
            table=raw.get("table", "sessions"),
            schema=raw.get("schema"),
            hash_tokens=raw.get("hash_tokens", False),
            owners=raw.get("owners", False),
            min_size=min_size,
            max_size=max_size,
            timeout=float(raw.get("timeout", 30.0)),
            connect_kwargs=kwargs,
        )

    def store_options(self) -> dict[str, Any]:
        """The `Store`/`AsyncStore` options (cleanup off: ``clearsessions`` purges)."""
        return {
            "table": self.table,
            "schema": self.schema,
            "hash_tokens": self.hash_tokens,
            "owners": self.owners,
            "cleanup": NoCleanup(),
        }

    def pool_options(self) -> dict[str, Any]:
        """The pools' options."""
        return {
            "min_size": self.min_size,
            "max_size": self.max_size,
            "timeout": self.timeout,
            "kwargs": dict(self.connect_kwargs),
            "name": "sessionstore-django",
        }


def _is_bool_for_number(value: object, kind: type | tuple[type, ...]) -> bool:
    """True for a bool given where a number is expected (bool subclasses int)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, bool) and bool not in kinds


def _dsn_of_database(alias: str) -> str:
    """The connection string of ``DATABASES[alias]``, as Django's backend connects."""
    databases = getattr(settings, "DATABASES", {})
    if alias not in databases:
        raise ImproperlyConfigured(
            f"settings.{_SETTING} has no 'dsn' and settings.DATABASES has no {alias!r}"
        )
    db = databases[alias]
    engine = str(db.get("ENGINE", ""))
    if not engine.endswith(("postgresql", "postgis")):
        raise ImproperlyConfigured(
            f"settings.{_SETTING} has no 'dsn' and DATABASES[{alias!r}] is not PostgreSQL "
            f"(ENGINE {engine!r}): set settings.{_SETTING}['dsn']"
        )
    options = {k: v for k, v in (db.get("OPTIONS") or {}).items() if k not in _NOT_CONNINFO}
    params: dict[str, Any] = {"dbname": db.get("NAME") or "postgres", **options}
    for key, param in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if db.get(key):
            params[param] = db[key]
    if db.get("PORT"):
        params["port"] = str(db["PORT"])
    if not db.get("NAME") and options.get("service"):
        del params["dbname"]  # the service file names the database
    try:
        return psycopg.conninfo.make_conninfo(**params)
    except psycopg.ProgrammingError as exc:
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] gives no valid connection string: {exc}"
        ) from exc


@dataclass
class _LoopStore:
    """The `AsyncStore` of one event loop, made once under its lock."""

    lock: asyncio.Lock
    store: AsyncStore | None = None


class _Stores:
    """This process's stores: one `Store`, and one `AsyncStore` per event loop.

    Everything is made on first use and belongs to the process that made it: after a
    fork the child starts afresh (the parent's pools are the parent's, and closing
    them from the child would close the parent's connections).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._config: _Config | None = None
        self._sync: Store | None = None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopStore] = (
            weakref.WeakKeyDictionary()
        )

    def after_fork_in_child(self) -> None:
        # A thread of the parent may have held the lock at the fork: a new one.
        self._lock = threading.Lock()
        self._forget()

    def _forget(self) -> None:
        self._pid = os.getpid()
        self._config = None
        self._sync = None
        self._loops = weakref.WeakKeyDictionary()

    def config(self) -> _Config:
        if self._config is None or self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._forget()
                if self._config is None:
                    self._config = _Config.from_settings()
        return self._config

    def sync(self) -> Store:
        store = self._sync
        if store is not None and self._pid == os.getpid():
            return store
        config = self.config()
        with self._lock:
            if self._sync is None:
                pool: ConnectionPool[Any] = ConnectionPool(
                    config.dsn, open=True, **config.pool_options()
                )
                self._sync = Store(pool, **config.store_options())
                logger.debug("opened the sync pool of process %d", self._pid)
            return self._sync

    async def for_loop(self) -> AsyncStore:
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop) if self._pid == os.getpid() else None
        if entry is not None and entry.store is not None:
            return entry.store
        config = self.config()
        if entry is None:
            # No await between the lookup and the insert: no other task of this loop
            # can come in between, and other loops have their own entries.
            entry = self._loops.setdefault(loop, _LoopStore(asyncio.Lock()))
        async with entry.lock:
            if entry.store is None:
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    config.dsn, open=False, **config.pool_options()
                )
                await pool.open()
                entry.store = AsyncStore(pool, **config.store_options())
                logger.debug("opened an async pool in process %d", self._pid)
        return entry.store

    def close(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._forget()  # inherited: not ours to close
                return
            sync, self._sync, self._config = self._sync, None, None
            loops, self._loops = dict(self._loops), weakref.WeakKeyDictionary()
        if sync is not None:
            sync.close()
            sync.pool.close()
        for loop, entry in loops.items():
            if entry.store is None:
                continue
            # An async pool closes in its own loop: at once if the loop is idle; if
            # it runs in another thread, there, waited for; if it runs this very
            # thread (a settings change inside async code), soon, as a task: waiting
            # would block the loop. A closed loop took its pool's tasks with it; the
            # sockets go with the process.
            if loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(entry.store.pool.close(), loop)
                if _running_loop() is not loop:
                    try:
                        closing.result(_CLOSE_TIMEOUT)
                    except TimeoutError:
                        logger.warning("an async pool did not close within %s s", _CLOSE_TIMEOUT)
            elif not loop.is_closed():
                loop.run_until_complete(entry.store.pool.close())
            else:
                logger.debug("an async pool outlived its event loop; not closed")

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._loops.pop(loop, None) if self._pid == os.getpid() else None
        if entry is not None and entry.store is not None:
            await entry.store.pool.close()
        await asyncio.to_thread(self.close)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_stores = _Stores()
os.register_at_fork(after_in_child=_stores.after_fork_in_child)
atexit.register(_stores.close)


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    # Tests (override_settings) and reloaders change settings at run time: the next
    # use opens pools for the new configuration.
    if setting in (_SETTING, "DATABASES"):
        _stores.close()


setting_changed.connect(_on_setting_changed)


def store() -> Store:
    """This process's `Store`, the one the sync session methods use.

    Opened on first use from ``settings.SESSIONSTORE``; e.g. for
    ``store().create_table()`` or ``store().all()``.

    Returns:
        The store.

    Raises:
        ImproperlyConfigured: If ``settings.SESSIONSTORE`` is invalid.
    """
    return _stores.sync()


async def astore() -> AsyncStore:
    """The running event loop's `AsyncStore`, the one the async session methods use.

    Returns:
        The store.

    Raises:
        ImproperlyConfigured: If ``settings.SESSIONSTORE`` is invalid.
    """
    return await _stores.for_loop()


def close() -> None:
    """Close this process's sync pool (and the async pools of idle event loops).

    Runs at exit by itself; the next use opens new pools. An async pool whose loop is
    running is left to `aclose` in that loop.
    """
    _stores.close()


async def aclose() -> None:
    """Close the running loop's async pool, then what `close` closes."""
    await _stores.aclose()


_Receive = Callable[[], Awaitable[Any]]
_Send = Callable[[Any], Awaitable[None]]
_ASGIApp = Callable[[dict[str, Any], _Receive, _Send], Awaitable[None]]


def with_lifespan(application: _ASGIApp) -> _ASGIApp:
    """Wrap a Django ASGI application so that the server's shutdown closes the pools.

    Django's ASGI handler does not speak the ASGI lifespan protocol; this wrapper
    answers it (startup opens nothing: the pools open on first use) and runs `aclose`
    at shutdown, in the server's loop::

        application = with_lifespan(get_asgi_application())

    Args:
        application: The ASGI application (``get_asgi_application()``).

    Returns:
        An ASGI application that passes every other scope to `application`.
    """

    async def app(scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] != "lifespan":
            await application(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await aclose()
                except Exception as exc:  # the server only logs what it is sent
                    logger.exception("closing the session pools failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


def _aware(expiry: dt.datetime) -> dt.datetime:
    """Django's expiry as an aware datetime (naive ones are local time, USE_TZ=False)."""
    if timezone.is_naive(expiry):
        return timezone.make_aware(expiry, timezone.get_default_timezone())
    return expiry


class SessionStore(SessionBase):
    """Django's session engine on sessionstore (``SESSION_ENGINE`` names this module).

    Django's ``SessionMiddleware`` makes one per request from the cookie's key; views
    use it as ``request.session``. See the module's documentation for the settings.

    Args:
        session_key: The key from the session cookie, or None. A key that is not
            shaped like one (see `_validate_session_key`) is treated as None.
    """

    # SessionBase's own private helpers, which django-stubs leaves out; used the way
    # Django's db backend uses them.
    _get_session: Callable[..., dict[str, Any]]
    _aget_session: Callable[..., Awaitable[dict[str, Any]]]

    def _validate_session_key(self, key: str | None) -> bool:
        return isinstance(key, str) and _KEY_RE.fullmatch(key) is not None

    def _get_new_session_key(self) -> str:
        # No "does it exist?" query (the base class asks): `create` saves with an
        # INSERT that leaves a taken key alone and says so, which is the real check.
        return get_random_string(32, VALID_KEY_CHARS)

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    def _owner(self, data: dict[str, Any]) -> str | None:
        """The owner to save the row with: the logged-in user's id, if owners are kept."""
        if not _stores.config().owners:
            return None
        user_id = data.get(SESSION_KEY)
        return None if user_id is None or user_id == "" else str(user_id)

    def _decode(self, raw: bytes) -> dict[str, Any] | None:
        """Decode a row's data as Django's `decode` does; None if it does not decode.

        Unlike `decode`, which returns ``{}`` for both, this tells an empty session
        from data that is corrupt, tampered with or signed with another
        ``SECRET_KEY``: the latter loses its key, as a missing row does.
        """
        try:
            data = signing.loads(raw.decode(), salt=self.key_salt, serializer=self.serializer)
        except signing.BadSignature:
            logging.getLogger("django.security.SuspiciousSession").warning("Session data corrupted")
            return None
        except Exception:  # the serializer's errors, as Django's decode catches them
            return None
        return data if isinstance(data, dict) else None

    def _loaded(self, raw: bytes | None) -> dict[str, Any]:
        data = None if raw is None else self._decode(raw)
        if data is None:
            logger.debug("no live session for the cookie's key; new session")
            self._session_key = None
            return {}
        return data

    def _row(self, data: dict[str, Any], expiry: dt.datetime) -> tuple[bytes, dt.datetime]:
        return self.encode(data).encode(), _aware(expiry)

    # -- sync

    def load(self) -> dict[str, Any]:
        """Read the session's data; an empty session if missing, expired or undecodable.

        Returns:
            The data (``{}`` and no key any more when there is no usable row).

        Raises:
            sessionstore.DatabaseError: If the database failed.
        """
        key = self.session_key
        return self._loaded(None if key is None else _stores.sync().find(key))

    def exists(self, session_key: str | None) -> bool:
        """Whether a live session has the key.

        Args:
            session_key: The key.

        Returns:
            True if it names a live session.

        Raises:
            sessionstore.DatabaseError: If the database failed.
        """
        if not self._validate_session_key(session_key):
            return False
        assert session_key is not None
        return _stores.sync().exists(session_key)

    def create(self) -> None:
        """Save the session under a new key (retrying on a taken one), as Django's ``db``.

        Raises:
            RuntimeError: If every attempt met a taken key (a broken random source).
            sessionstore.DatabaseError: If the database failed.
        """
        for _ in range(_CREATE_ATTEMPTS):
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                logger.warning("a freshly generated session key was already taken; trying another")
                continue
            self.modified = True
            return
        raise RuntimeError(f"no free session key after {_CREATE_ATTEMPTS} attempts")

    def save(self, must_create: bool = False) -> None:
        """Save the session's data and expiry.

        Args:
            must_create: Create a new row (a taken key raises ``CreateError``);
                otherwise rewrite the existing live row only.

        Raises:
            CreateError: If `must_create` and a live session has the key.
            UpdateError: If not `must_create` and the row is gone (deleted or
                expired since it was read: it is not brought back).
            sessionstore.DatabaseError: If the database failed.
        """
        if self.session_key is None:
            self.create()
            return
        data = self._get_session(no_load=must_create)
        raw, expiry = self._row(data, self.get_expiry_date())
        sync = _stores.sync()
        owner = self._owner(data)
        if must_create:
            if not sync.create(self.session_key, raw, expiry, owner=owner):
                raise CreateError
        elif not sync.update(self.session_key, raw, expiry, owner=owner):
            raise UpdateError

    def delete(self, session_key: str | None = None) -> None:
        """Delete a session's row (this session's if no key is given); a missing one is fine.

        Args:
            session_key: The key, or None for this session's.

        Raises:
            sessionstore.DatabaseError: If the database failed.
        """
        if session_key is None:
            session_key = self.session_key
        if session_key is None or not self._validate_session_key(session_key):
            return
        _stores.sync().delete(session_key)

    @classmethod
    def clear_expired(cls) -> None:
        """Delete the expired sessions, in batches: what ``manage.py clearsessions`` runs.

        Raises:
            sessionstore.DatabaseError: If the database failed.
        """
        deleted = _stores.sync().purge_expired()
        logger.info("clear_expired: %d expired sessions deleted", deleted)

    # -- async (Django 5.1+): the same, on the loop's AsyncStore

    async def aload(self) -> dict[str, Any]:
        """`load` on the running loop's `AsyncStore` (same arguments, result, errors)."""
        key = self.session_key
        return self._loaded(None if key is None else await (await astore()).find(key))

    async def aexists(self, session_key: str | None) -> bool:
        """`exists` on the running loop's `AsyncStore` (same arguments, result, errors)."""
        if not self._validate_session_key(session_key):
            return False
        assert session_key is not None
        return await (await astore()).exists(session_key)

    async def acreate(self) -> None:
        """`create` on the running loop's `AsyncStore` (same arguments, result, errors)."""
        for _ in range(_CREATE_ATTEMPTS):
            self._session_key = await self._aget_new_session_key()
            try:
                await self.asave(must_create=True)
            except CreateError:
                logger.warning("a freshly generated session key was already taken; trying another")
                continue
            self.modified = True
            return
        raise RuntimeError(f"no free session key after {_CREATE_ATTEMPTS} attempts")

    async def asave(self, must_create: bool = False) -> None:
        """`save` on the running loop's `AsyncStore` (same arguments, result, errors)."""
        if self.session_key is None:
            await self.acreate()
            return
        data = await self._aget_session(no_load=must_create)
        raw, expiry = self._row(data, await self.aget_expiry_date())
        astore_ = await astore()
        owner = self._owner(data)
        if must_create:
            if not await astore_.create(self.session_key, raw, expiry, owner=owner):
                raise CreateError
        elif not await astore_.update(self.session_key, raw, expiry, owner=owner):
            raise UpdateError

    async def adelete(self, session_key: str | None = None) -> None:
        """`delete` on the running loop's `AsyncStore` (same arguments, result, errors)."""
        if session_key is None:
            session_key = self.session_key
        if session_key is None or not self._validate_session_key(session_key):
            return
        await (await astore()).delete(session_key)

    @classmethod
    async def aclear_expired(cls) -> None:
        """`clear_expired` on the running loop's `AsyncStore` (same arguments, result, errors)."""
        deleted = await (await astore()).purge_expired()
        logger.info("clear_expired: %d expired sessions deleted", deleted)


class SessionMiddleware(_DjangoSessionMiddleware):
    """Django's ``SessionMiddleware``, plus SCS's ``Cache-Control`` on a cookie change.

    Put it in ``MIDDLEWARE`` where ``django.contrib.sessions.middleware.SessionMiddleware``
    was. Everything Django's does stays (``Vary: Cookie`` when the session was used,
    the cookie set or deleted, ``SessionInterrupted``); a response that sets or
    deletes the session cookie also gets ``no-cache="Set-Cookie"`` merged into its
    ``Cache-Control``, so a shared cache may keep the page but never the cookie.
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """Save the session as Django does, then mark a cookie change for caches.

        Args:
            request: The request.
            response: The response.

        Returns:
            The response.
        """
        response = super().process_response(request, response)
        if settings.SESSION_COOKIE_NAME in response.cookies:
            merged = cache_control_with_no_cache_set_cookie(
                [response.headers.get("Cache-Control", "")]
            )
            if merged is not None:
                response.headers["Cache-Control"] = merged
        return response


# -- sessions per user


def _owner_of(user: object) -> str | None:
    """The owner a user's sessions are saved under: what ``login`` stores as its id."""
    if isinstance(user, str):
        return validate_owner(user)
    if getattr(user, "is_anonymous", False) is True:
        return None  # AnonymousUser: no sessions of its own
    meta = getattr(user, "_meta", None)
    if meta is None or not hasattr(meta, "pk"):
        raise TypeError(f"user must be a user model instance or a str, not {type(user).__name__}")
    if getattr(user, "pk", None) is None:
        return None  # a user not saved yet: no sessions
    owner: str = meta.pk.value_to_string(user)
    return owner


def _key_of(current: SessionBase | str | None) -> str | None:
    key = current.session_key if isinstance(current, SessionBase) else current
    return key if isinstance(key, str) and _KEY_RE.fullmatch(key) else None


def _decoder() -> Callable[[bytes], dict[str, Any]]:
    decoding = SessionStore()
    return lambda raw: decoding._decode(raw) or {}


def sessions_of(user: object, current: SessionBase | str | None = None) -> list[UserSession]:
    """List a user's live sessions ("where you are logged in"); needs ``owners=True``.

    Args:
        user: A user model instance (``request.user``) or the owner id as text.
        current: The session to mark as `UserSession.current` (``request.session``),
            or its key.

    Returns:
        The sessions, soonest to expire first; empty for an anonymous user. Show
            only a prefix of each `UserSession.key`: without ``hash_tokens`` it is a
            working session key.

    Raises:
        TypeError: If `user` is neither a model instance nor a str.
        sessionstore.OwnersNotEnabledError: Without ``owners=True``.
        sessionstore.DatabaseError: If the database failed.
    """
    owner = _owner_of(user)
    if owner is None:
        return []
    return listing(_stores.sync().sessions_of(owner), _key_of(current), _decoder())


async def asessions_of(user: object, current: SessionBase | str | None = None) -> list[UserSession]:
    """`sessions_of` on the running loop's `AsyncStore` (same arguments, result, errors)."""
    owner = _owner_of(user)
    if owner is None:
        return []
    owned = await (await astore()).sessions_of(owner)
    return listing(owned, _key_of(current), _decoder())


def logout_everywhere(user: object, keep: SessionBase | str | None = None) -> int:
    """End every session of a user at once, except `keep`; needs ``owners=True``.

    The sessions' next requests get an empty session (Django's ``AnonymousUser``)::

        def logout_other_devices(request):
            ended = logout_everywhere(request.user, keep=request.session)

    Args:
        user: A user model instance or the owner id as text.
        keep: The session to leave logged in (``request.session``), or its key;
            None ends them all.

    Returns:
        How many sessions were deleted; 0 for an anonymous user.

    Raises:
        TypeError: If `user` is neither a model instance nor a str.
        sessionstore.OwnersNotEnabledError: Without ``owners=True``.
        sessionstore.DatabaseError: If the database failed.
    """
    owner = _owner_of(user)
    if owner is None:
        return 0
    ended = _stores.sync().delete_owned(owner, keep=_key_of(keep))
    logger.debug("logged out everywhere: %d sessions deleted", ended)
    return ended


async def alogout_everywhere(user: object, keep: SessionBase | str | None = None) -> int:
    """`logout_everywhere` on the running loop's `AsyncStore` (same arguments, result, errors)."""
    owner = _owner_of(user)
    if owner is None:
        return 0
    ended = await (await astore()).delete_owned(owner, keep=_key_of(keep))
    logger.debug("logged out everywhere: %d sessions deleted", ended)
    return ended


def revoke(user: object, key: str) -> bool:
    """End one of a user's sessions, by the `UserSession.key` that `sessions_of` listed.

    Only a session of `user` is deleted: a key from one user's list ends no one
    else's session.

    Args:
        user: A user model instance or the owner id.
        key: The listed key.

    Returns:
        True if it was the user's session and is gone.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If `key` is invalid.
        sessionstore.OwnersNotEnabledError: Without ``owners=True``.
        sessionstore.DatabaseError: If the database failed.
    """
    owner = _owner_of(user)
    return owner is not None and _stores.sync().revoke(owner, key)


async def arevoke(user: object, key: str) -> bool:
    """`revoke` on the running loop's `AsyncStore` (same arguments, result, errors)."""
    owner = _owner_of(user)
    return owner is not None and await (await astore()).revoke(owner, key)
