"""Django sessions in PostgreSQL, a session engine: see docs/integrations-django.md."""

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
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .._core import MAX_TOKEN_LENGTH, SessionCore, validate_owner
from ..cleanup import NoCleanup
from ..manager import (
    CREATED_KEY,
    DEFAULT_ROTATE_GRACE,
    OWNER_KEY,
    Device,
    Loaded,
    Outcome,
    SessionManager,
    Steps,
    UserSession,
    arun,
    run,
    to_timedelta,
)
from ..store import Store
from ..store_async import AsyncStore
from ._common import cache_control_with_no_cache_set_cookie, missing_extra

try:
    from django.conf import settings
    from django.contrib.auth import SESSION_KEY
    from django.contrib.auth.signals import user_logged_in
    from django.contrib.sessions.backends.base import SessionBase, UpdateError
    from django.contrib.sessions.middleware import SessionMiddleware as _DjangoSessionMiddleware
    from django.core import signing
    from django.core.exceptions import ImproperlyConfigured
    from django.core.signals import setting_changed
    from django.http import HttpRequest, HttpResponse
    from django.utils import timezone
    from django.utils.cache import patch_vary_headers
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
    "asigned_in_within",
    "astore",
    "close",
    "logout_everywhere",
    "revoke",
    "sessions_of",
    "signed_in_within",
    "store",
    "with_lifespan",
]

logger = logging.getLogger(__name__)

#: What a session key may look like to be used at all (Django's rule: at least 8
#: characters; url-safe only), so an odd cookie never reaches the store.
_KEY_RE = re.compile(rf"[A-Za-z0-9_-]{{8,{MAX_TOKEN_LENGTH}}}")

#: Connection parameters of Django's backend that are Django's or psycopg's, not
#: libpq's (the engine's connections take no Django adapters or cursor classes).
_NOT_CONNINFO = frozenset(
    "assume_role context cursor_factory isolation_level pool prepare_threshold "
    "server_side_binding".split()
)

_SETTING = "SESSIONSTORE"

#: How long `close` waits for an async pool closing in another thread's loop.
_CLOSE_TIMEOUT = 10.0

#: The keys of ``SESSIONSTORE`` and the types each takes.
_KEYS: dict[str, tuple[type, ...]] = {
    "dsn": (str,),
    "database": (str,),
    "table": (str,),
    "schema": (str, type(None)),
    "hash_tokens": (bool,),
    "owners": (bool,),
    "min_size": (int,),
    "max_size": (int,),
    "timeout": (int, float),
    "prepare_threshold": (int, type(None)),
    "max_sessions_per_owner": (int, type(None)),
    "encryption": (object,),  # a sessionstore.crypto.Keyring: SessionCore checks it
    "lifetime": (int, float, dt.timedelta, type(None)),
    "renew_after": (int, float),
    "rotate_every": (int, float, dt.timedelta, type(None)),
    "rotate_grace": (int, float, dt.timedelta),
    "record_devices": (bool,),
}

#: The keys of ``SESSIONSTORE`` that are the stores' options, and the session manager's.
_STORE_KEYS = ("table", "schema", "hash_tokens", "owners", "max_sessions_per_owner", "encryption")
_MANAGER_KEYS = ("lifetime", "renew_after", "rotate_every", "rotate_grace", "record_devices")


@dataclass(frozen=True)
class _Config:
    """The ``SESSIONSTORE`` setting, checked: what the stores, pools and manager take."""

    store_options: dict[str, Any]
    pool_options: dict[str, Any]
    manager_options: dict[str, Any]

    @classmethod
    def from_settings(cls) -> _Config:
        """Read and check ``settings.SESSIONSTORE``; ImproperlyConfigured if it is wrong."""
        raw = getattr(settings, _SETTING, {})
        if not isinstance(raw, dict):
            raise ImproperlyConfigured(f"settings.{_SETTING} must be a dict")
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise ImproperlyConfigured(
                f"settings.{_SETTING} has unknown keys {unknown}; the keys are {sorted(_KEYS)}"
            )
        for key, value in raw.items():
            # bool subclasses int: True is no size.
            if not isinstance(value, _KEYS[key]) or (
                isinstance(value, bool) and bool not in _KEYS[key]
            ):
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
        manager_options = {key: raw[key] for key in _MANAGER_KEYS if key in raw}
        # SESSION_SAVE_EVERY_REQUEST: Django's way to say "renew on every request".
        if getattr(settings, "SESSION_SAVE_EVERY_REQUEST", False):
            manager_options["renew_after"] = 0.0
        store_options = {key: raw[key] for key in _STORE_KEYS if key in raw}
        try:  # checked now, without I/O: the stores' options and the manager's
            SessionCore(**store_options)
            SessionManager(
                _never, _never, idle_timeout=settings.SESSION_COOKIE_AGE, **manager_options
            )
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"settings.{_SETTING}: {exc}") from exc
        kwargs: Any = {"autocommit": True}
        if "prepare_threshold" in raw:
            kwargs["prepare_threshold"] = raw["prepare_threshold"]
        if "dsn" not in raw:
            alias, static = raw.get("database", "default"), kwargs
            _database_params(alias)  # checked now; computed again for each connection
            kwargs = lambda: {**_database_params(alias), **static}  # noqa: E731
        pool_options = {
            "conninfo": raw.get("dsn", ""),
            "min_size": min_size,
            "max_size": max_size,
            "timeout": float(raw.get("timeout", 30.0)),
            "kwargs": kwargs,
            "name": "sessionstore-django",
        }
        return cls(store_options, pool_options, manager_options)


def _never(_: Any) -> Any:
    raise NotImplementedError  # a manager made only to check the settings


def _database_params(alias: str) -> dict[str, Any]:
    """What Django's backend for ``DATABASES[alias]`` connects with (credentials included)."""
    from django.db.utils import ConnectionHandler

    if alias not in getattr(settings, "DATABASES", {}):
        raise ImproperlyConfigured(
            f"settings.{_SETTING} has no 'dsn' and settings.DATABASES has no {alias!r}"
        )
    # A handler of its own: the settings as they are now (Django's `connections`
    # keeps the DATABASES it first read), and no connection of Django's is touched.
    wrapper = ConnectionHandler()[alias]
    if wrapper.vendor != "postgresql":
        engine = wrapper.settings_dict.get("ENGINE")
        raise ImproperlyConfigured(
            f"settings.{_SETTING} has no 'dsn' and DATABASES[{alias!r}] is not PostgreSQL "
            f"(ENGINE {engine!r}): set settings.{_SETTING}['dsn']"
        )
    params = wrapper.get_connection_params()
    params = {key: value for key, value in params.items() if key not in _NOT_CONNINFO}
    try:
        psycopg.conninfo.make_conninfo(**params)
    except psycopg.ProgrammingError as exc:
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] gives no valid connection string: {exc}"
        ) from exc
    return params


@dataclass
class _LoopStore:
    """The `AsyncStore` of one event loop, made once under its lock."""

    lock: asyncio.Lock
    store: AsyncStore | None = None


class _Stores:
    """This process's stores, made on first use: one `Store`, one `AsyncStore` per loop."""

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
                pool: ConnectionPool[Any] = ConnectionPool(open=True, **config.pool_options)
                # No cleanup thread: ``clearsessions`` purges, as with Django's backends.
                self._sync = Store(pool, **config.store_options, cleanup=NoCleanup())
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
                    open=False, **config.pool_options
                )
                await pool.open()
                entry.store = AsyncStore(pool, **config.store_options, cleanup=NoCleanup())
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
            # In its own loop (docs/integrations-django.md); not waited for in the loop's
            # own thread (a settings change inside async code): that would block it.
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
    if setting in (_SETTING, "DATABASES", "SESSION_SAVE_EVERY_REQUEST"):
        _stores.close()


setting_changed.connect(_on_setting_changed)


def store() -> Store:
    """This process's `Store` (the sync methods'), opened on first use."""
    return _stores.sync()


async def astore() -> AsyncStore:
    """The running event loop's `AsyncStore` (the async methods'), opened on first use."""
    return await _stores.for_loop()


def close() -> None:
    """Close this process's pools (runs at exit; the next use opens new ones)."""
    _stores.close()


async def aclose() -> None:
    """Close the running loop's async pool, then what `close` closes."""
    await _stores.aclose()


_Receive = Callable[[], Awaitable[Any]]
_Send = Callable[[Any], Awaitable[None]]
_ASGIApp = Callable[[dict[str, Any], _Receive, _Send], Awaitable[None]]


def with_lifespan(application: _ASGIApp) -> _ASGIApp:
    """Wrap Django's ASGI application so that the server's shutdown (lifespan) closes the pools."""

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


#: The shortest idle timeout a save is given (a `set_expiry` in the past ends it at once).
_MIN_IDLE = dt.timedelta(microseconds=1)


#: How many payloads a session instance keeps the signed bytes of (`SessionStore._dumps`).
_SIGNED_KEPT = 8


class _StableSigner(signing.TimestampSigner):
    """Django's session signing with a fixed timestamp: the same data, the same bytes."""

    def timestamp(self) -> str:
        # Sessions are never checked for the signature's age (Django's decode passes
        # no max_age); a fixed one lets the manager tell an unchanged session by its bytes.
        return "0"


def _owned(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the logged-in user's id (``_auth_user_id``) as the manager's owner."""
    user = data.get(SESSION_KEY)
    if user is not None and user != "":
        data[OWNER_KEY] = str(user)
    return data


def _stored(data: dict[str, Any]) -> dict[str, Any]:
    """What is signed and stored of `data`: its keys sorted, without the owner (a column)."""
    return {key: value for key, value in sorted(data.items()) if key != OWNER_KEY}


def _public(data: dict[str, Any]) -> dict[str, Any]:
    """The session as views see it: without the manager's keys."""
    return {key: value for key, value in data.items() if key not in (CREATED_KEY, OWNER_KEY)}


class _Manager(SessionManager):
    """The session manager, taking Django's keys too (sessions from before the upgrade)."""

    def token_of(self, cookie: object) -> str | None:
        return cookie if isinstance(cookie, str) and _KEY_RE.fullmatch(cookie) else None


class SessionStore(SessionBase):
    """Django's session engine on the session manager (``SESSION_ENGINE`` names this module).

    The `Loaded` of `SessionManager.load` is kept on the instance; each method has its
    ``a``-prefixed twin on the running loop's `AsyncStore`.
    """

    # SessionBase's own private helpers, which django-stubs leaves out.
    _get_session: Callable[..., dict[str, Any]]
    _aget_session: Callable[..., Awaitable[dict[str, Any]]]

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._loaded: Loaded | None = None
        self._renew = False
        #: The signed bytes of the data (as serialized) this instance encoded or decoded.
        self._signed: dict[bytes, bytes] = {}
        #: The request's client (set by `SessionMiddleware`), kept with ``record_devices``.
        self.device: Device | None = None

    def _validate_session_key(self, key: str | None) -> TypeGuard[str]:
        return isinstance(key, str) and _KEY_RE.fullmatch(key) is not None

    def _manager(
        self, idle: dt.timedelta | None = None, now: dt.datetime | None = None
    ) -> SessionManager:
        """The manager for the settings, `idle` its idle timeout, `now` its time."""
        options = dict(_stores.config().manager_options)
        idle = idle or dt.timedelta(seconds=settings.SESSION_COOKIE_AGE)
        if idle <= to_timedelta(options.get("rotate_grace", DEFAULT_ROTATE_GRACE), "rotate_grace"):
            # A session that ends within the grace (``set_expiry``) is never due for
            # rotation anyway (see `SessionManager.save`).
            options.pop("rotate_every", None)
        if now is not None:
            options["clock"] = lambda: now
        return _Manager(self._dumps, self._loads, idle_timeout=idle, **options)

    def _dumps(self, data: dict[str, Any]) -> bytes:
        """Django's signed encoding: equal data, equal bytes (as loaded, if it was)."""
        stored = _stored(data)
        serialized = self.serializer().dumps(stored)
        raw = self._signed.get(serialized)
        if raw is None:
            # Signing (zlib and an HMAC) is most of an encoding's cost: data this
            # request read or encoded before keeps the bytes it had.
            signer = _StableSigner(salt=self.key_salt)
            raw = signer.sign_object(stored, serializer=self.serializer, compress=True).encode()
            self._remember(serialized, raw)
        return raw

    def _loads(self, raw: bytes) -> dict[str, Any] | None:
        """Decode as Django does; None for data corrupt or signed with another key."""
        try:
            data = signing.loads(raw.decode(), salt=self.key_salt, serializer=self.serializer)
        except signing.BadSignature:
            logging.getLogger("django.security.SuspiciousSession").warning("Session data corrupted")
            return None
        except Exception:  # the serializer's errors, as Django's decode catches them
            return None
        return _owned(data) if isinstance(data, dict) else None

    def _remember(self, serialized: bytes, raw: bytes) -> None:
        """Keep `raw` as the signed bytes of `serialized`, for a few payloads."""
        # A request needs two (as read, as saved), a save that merges more; an instance
        # kept for many saves must not grow without bound.
        if len(self._signed) >= _SIGNED_KEPT:
            self._signed.clear()
        self._signed[serialized] = raw

    def _use(self, loaded: Loaded) -> dict[str, Any]:
        """Keep what was loaded; forget the key if it named no live session."""
        self._loaded = loaded
        if loaded.found:  # its bytes, for a save that changes nothing (`_dumps`)
            self._remember(self.serializer().dumps(_stored(loaded.data)), loaded.raw)
        else:
            self._session_key = None
        return _public(loaded.data)

    def _steps(
        self, data: dict[str, Any], must_create: bool, had_cookie: bool | None
    ) -> tuple[Steps[Outcome], Callable[[Outcome], Outcome]]:
        """The manager's save of `data`, and what the instance learns from its outcome."""
        loaded = (
            self._loaded if self._loaded is not None and not must_create else Loaded(None, False)
        )
        if had_cookie is not None:
            loaded.had_cookie = had_cookie
        full = _owned(dict(data))
        if CREATED_KEY in loaded.data:
            full[CREATED_KEY] = loaded.data[CREATED_KEY]
        now = timezone.now()
        # The idle timeout is the session's expiry age: SESSION_COOKIE_AGE or set_expiry.
        idle = _aware(self.get_expiry_date(modification=now)) - _aware(now)
        manager = self._manager(max(idle, _MIN_IDLE), _aware(now))

        def after(outcome: Outcome) -> Outcome:
            self._renew = False
            if outcome.set_cookie and outcome.token is not None:
                # The Outcome does not carry the written row's version: 0 matches no
                # row, so a later save of this instance re-reads the row and merges.
                raw = self._dumps(full)
                self._loaded = Loaded(outcome.token, True, full, True, 0, outcome.expiry, raw)
                self._session_key = outcome.token
            elif outcome.token is None:
                self._loaded, self._session_key = None, None
            return outcome

        return manager.save(loaded, full, renew=self._renew, device=self.device), after

    def _save(self, must_create: bool = False, had_cookie: bool | None = None) -> Outcome:
        """Run the manager's save on the process's `Store`."""
        steps, after = self._steps(self._get_session(no_load=must_create), must_create, had_cookie)
        return after(run(steps, _stores.sync()))

    def _raise_if_gone(self, outcome: Outcome) -> None:
        """UpdateError when data was left unsaved because the session is gone."""
        if outcome.token is None and self._get_session():
            raise UpdateError

    def _doomed(self, session_key: str | None) -> Loaded | None:
        """What `delete` deletes: the row of `session_key`, this session's if None."""
        if session_key is None or session_key == self.session_key:
            session_key, self._loaded = self.session_key, None  # new from now on
        if not self._validate_session_key(session_key):
            return None
        return Loaded(session_key, True, found=True)

    def load(self) -> dict[str, Any]:
        """The session's data; ``{}`` (and no key) if the key names no live session."""
        return self._use(run(self._manager().load(self.session_key), _stores.sync()))

    async def aload(self) -> dict[str, Any]:
        """`load` on the running loop's `AsyncStore`."""
        return self._use(await arun(self._manager().load(self.session_key), await astore()))

    def exists(self, session_key: str | None) -> bool:
        """Whether a live session has the key."""
        return self._validate_session_key(session_key) and _stores.sync().exists(session_key)

    async def aexists(self, session_key: str | None) -> bool:
        """`exists` on the running loop's `AsyncStore`."""
        if not self._validate_session_key(session_key):
            return False
        return await (await astore()).exists(session_key)

    def create(self) -> None:
        """Save the session under a new key (an empty session is not stored)."""
        self.save(must_create=True)
        self.modified = True

    async def acreate(self) -> None:
        """`create` on the running loop's `AsyncStore`."""
        await self.asave(must_create=True)
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        """Save as the manager decides (`must_create`: under a new key); UpdateError if gone."""
        self._raise_if_gone(self._save(must_create))

    async def asave(self, must_create: bool = False) -> None:
        """`save` on the running loop's `AsyncStore`."""
        data = await self._aget_session(no_load=must_create)
        steps, after = self._steps(data, must_create, None)
        self._raise_if_gone(after(await arun(steps, await astore())))

    def cycle_key(self) -> None:
        """Have the next save use a new key and delete the old row (as at login)."""
        self._get_session()
        self._renew = self.modified = True

    async def acycle_key(self) -> None:
        """`cycle_key` in async code."""
        await self._aget_session()
        self._renew = self.modified = True

    def delete(self, session_key: str | None = None) -> None:
        """Delete a session's row now (this session's if no key is given)."""
        loaded = self._doomed(session_key)
        if loaded is not None:
            run(self._manager().save(loaded, {}), _stores.sync())

    async def adelete(self, session_key: str | None = None) -> None:
        """`delete` on the running loop's `AsyncStore`."""
        loaded = self._doomed(session_key)
        if loaded is not None:
            await arun(self._manager().save(loaded, {}), await astore())

    @classmethod
    def clear_expired(cls) -> None:
        """Delete the expired sessions in batches (``manage.py clearsessions``)."""
        logger.info("clear_expired: %d deleted", _stores.sync().purge_expired())

    @classmethod
    async def aclear_expired(cls) -> None:
        """`clear_expired` on the running loop's `AsyncStore`."""
        logger.info("clear_expired: %d deleted", await (await astore()).purge_expired())


class SessionMiddleware(_DjangoSessionMiddleware):
    """Django's ``SessionMiddleware`` (in its place), applying the session manager's decision."""

    def process_request(self, request: HttpRequest) -> None:
        """Make the request's session, knowing its client (``REMOTE_ADDR``, ``User-Agent``)."""
        super().process_request(request)
        if isinstance(request.session, SessionStore):
            meta = request.META
            request.session.device = Device(meta.get("REMOTE_ADDR"), meta.get("HTTP_USER_AGENT"))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """Save the session and set, keep or delete its cookie."""
        session = getattr(request, "session", None)
        name = settings.SESSION_COOKIE_NAME
        if (
            isinstance(session, SessionStore)
            and response.status_code < 500
            and (session.accessed or session.modified or settings.SESSION_SAVE_EVERY_REQUEST)
        ):
            patch_vary_headers(response, ("Cookie",))
            outcome = session._save(had_cookie=name in request.COOKIES)
            _apply(response, session, outcome)
            changed = outcome.cookie_changed
        else:  # untouched, another engine, or a server error: Django's own way
            response = super().process_response(request, response)
            changed = name in response.cookies
        if changed:
            merged = cache_control_with_no_cache_set_cookie(
                [response.headers.get("Cache-Control", "")]
            )
            if merged is not None:
                response.headers["Cache-Control"] = merged
        return response


def _apply(response: HttpResponse, session: SessionStore, outcome: Outcome) -> None:
    """Set or delete the session cookie as `outcome` says, with Django's cookie settings."""
    name, path = settings.SESSION_COOKIE_NAME, settings.SESSION_COOKIE_PATH
    domain, samesite = settings.SESSION_COOKIE_DOMAIN, settings.SESSION_COOKIE_SAMESITE
    if outcome.delete_cookie:
        response.delete_cookie(name, path=path, domain=domain, samesite=samesite)
    elif outcome.set_cookie and outcome.token is not None:
        response.set_cookie(
            name,
            outcome.token,
            max_age=None if session.get_expire_at_browser_close() else outcome.max_age,
            domain=domain,
            path=path,
            secure=bool(settings.SESSION_COOKIE_SECURE),
            httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
            samesite=samesite,
        )


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
    """The session key of `current` (a session or a key), if it is shaped like one."""
    key = current.session_key if isinstance(current, SessionBase) else current
    return key if isinstance(key, str) and _KEY_RE.fullmatch(key) else None


def _listing(listed: list[UserSession]) -> list[UserSession]:
    """The listed sessions' data as views see it."""
    return [replace(each, data=_public(each.data)) for each in listed]


def sessions_of(user: object, current: SessionBase | str | None = None) -> list[UserSession]:
    """`SessionManager.sessions` of `user`, `current` (a session or its key) marked.

    `user` is a user model instance or the owner id as text (else TypeError), here and below.
    """
    owner = _owner_of(user)
    if owner is None:
        return []
    steps = SessionStore()._manager().sessions(owner, _key_of(current))
    return _listing(run(steps, _stores.sync()))


async def asessions_of(user: object, current: SessionBase | str | None = None) -> list[UserSession]:
    """`sessions_of` on the running loop's `AsyncStore`."""
    owner = _owner_of(user)
    if owner is None:
        return []
    steps = SessionStore()._manager().sessions(owner, _key_of(current))
    return _listing(await arun(steps, await astore()))


def logout_everywhere(user: object, keep: SessionBase | str | None = None) -> int:
    """`SessionManager.log_out_everywhere` of `user` but `keep` (a session or its key)."""
    owner = _owner_of(user)
    if owner is None:
        return 0
    return run(SessionManager.log_out_everywhere(owner, _key_of(keep)), _stores.sync())


async def alogout_everywhere(user: object, keep: SessionBase | str | None = None) -> int:
    """`logout_everywhere` on the running loop's `AsyncStore`."""
    owner = _owner_of(user)
    if owner is None:
        return 0
    return await arun(SessionManager.log_out_everywhere(owner, _key_of(keep)), await astore())


def revoke(user: object, session_id: str) -> bool:
    """`SessionManager.revoke` of `user`."""
    owner = _owner_of(user)
    return owner is not None and run(SessionManager.revoke(owner, session_id), _stores.sync())


async def arevoke(user: object, session_id: str) -> bool:
    """`revoke` on the running loop's `AsyncStore`."""
    owner = _owner_of(user)
    return owner is not None and await arun(
        SessionManager.revoke(owner, session_id), await astore()
    )


def _signed_in(sender: object, request: HttpRequest, user: object, **_: Any) -> None:
    """``user_logged_in`` (``login``, ``alogin``): the session's user signed in now."""
    session = getattr(request, "session", None)
    owner = _owner_of(user)
    if isinstance(session, SessionStore) and owner is not None:
        signed: dict[str, Any] = {}
        SessionManager.log_in(signed, owner)
        del signed[OWNER_KEY]  # the row's owner is ``_auth_user_id``'s (see `_owned`)
        session.update(signed)


user_logged_in.connect(_signed_in, dispatch_uid="sessionstore.signed_in")


def _session_of(current: SessionBase | HttpRequest) -> SessionBase:
    return current.session if isinstance(current, HttpRequest) else current


def signed_in_within(current: SessionBase | HttpRequest, within: dt.timedelta | float) -> bool:
    """`SessionManager.signed_in_within` for ``request.session`` (or the request)."""
    data = dict(_session_of(current).items())
    return SessionStore()._manager().signed_in_within(data, within)


async def asigned_in_within(
    current: SessionBase | HttpRequest, within: dt.timedelta | float
) -> bool:
    """`signed_in_within` for async views (the session loaded on the running loop's store)."""
    data = dict(await _session_of(current).aitems())
    return SessionStore()._manager().signed_in_within(data, within)
