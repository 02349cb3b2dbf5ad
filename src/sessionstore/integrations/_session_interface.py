"""Flask's session API on the `SessionManager`, for Flask and Quart (docs/integrations-quart.md).

Quart's session API is Flask's (its ``SessionMixin``, werkzeug's responses), so one
session class and one adapter serve both.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionMixin
from werkzeug.sansio.request import Request
from werkzeug.sansio.response import Response

from ..manager import (
    CREATED_KEY,
    DEFAULT_RENEW_AFTER,
    DEFAULT_ROTATE_GRACE,
    Device,
    Loaded,
    Outcome,
    SessionManager,
    Steps,
    owner_of,
    secure_by_default,
    to_timedelta,
)
from ..store import Store
from ..store_async import AsyncStore
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    cache_control_with_no_cache_set_cookie,
    merge_header,
    vary_with_cookie,
)

_Interface = TypeVar("_Interface")
_Store = TypeVar("_Store", Store, AsyncStore)

#: The ``app.config`` keys that override the constructor's keywords (`SessionManager`'s).
SETTINGS = {
    "lifetime": "SESSION_ABSOLUTE_LIFETIME",
    "renew_after": "SESSION_RENEW_AFTER",
    "rotate_every": "SESSION_ROTATE_EVERY",
    "rotate_grace": "SESSION_ROTATE_GRACE",
    "record_devices": "SESSION_RECORD_DEVICES",
}


class ServerSideSession(SessionMixin):
    """The session of one request (``flask.session``): a mapping loaded on first use.

    `load` runs ``SessionManager.load`` (Flask's reads the store then; Quart's hands
    over what was read when the request started); `token` is the cookie's, if it has
    the shape of one.
    """

    def __init__(
        self, load: Callable[[], Loaded], token: str | None = None, *, had_cookie: bool = False
    ) -> None:
        self._load = load
        self._token = token
        self._had_cookie = had_cookie or token is not None
        self._loaded: Loaded | None = None
        self._data: dict[str, Any] | None = None
        self._found = False
        self._renew = False
        self.modified = False
        self.accessed = False
        #: True if the request's cookie named no live session (known once loaded).
        self.new = token is None

    @property
    def token(self) -> str | None:
        """The token the request's cookie holds, or the token just issued for it."""
        return self._token

    @property
    def loaded(self) -> bool:
        """Whether the request used the data (read or replaced it)."""
        return self._data is not None

    @property
    def found(self) -> bool:
        """Whether the cookie's token named a live session in the store."""
        return self._found

    @property
    def owner(self) -> str | None:
        """The user this session belongs to (set by ``login_session``), or None."""
        return owner_of(self._ensure())

    def renew_token(self) -> None:
        """Save the session under a new token at the response, deleting the old row."""
        self._ensure()
        self._renew = True
        self.modified = True

    def clear(self) -> None:
        """Remove all the data (no query); the row and the cookie go at the response.

        Data stored again in this request is saved under a new token.
        """
        if self._loaded is None:
            # Unread, so maybe live: the save deletes the token's row in any case.
            self._loaded = Loaded(self._token, self._had_cookie, found=self._token is not None)
        self._data = {}
        self._found = False
        self._renew = True
        self.accessed = self.modified = True

    def _ensure(self) -> dict[str, Any]:
        """Return the data, loading it the first time."""
        if self._data is None:
            self._loaded = loaded = self._load()
            self._found = loaded.found
            self.new = not loaded.found
            self._data = loaded.data
        self.accessed = True
        return self._data

    # The mapping: every access goes through _ensure, so the first one loads.

    def __getitem__(self, key: str) -> Any:
        return self._ensure()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._ensure()[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._ensure()[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._ensure())

    def __len__(self) -> int:
        return len(self._ensure())

    def __repr__(self) -> str:
        # Never the token: reprs end up in logs and error pages.
        data = "(not loaded)" if self._data is None else repr(self._data)
        return f"<{type(self).__name__} {data}>"


class ServerSideInterface(Generic[_Store]):
    """The half of a ``PostgresSessionInterface`` that Flask and Quart share.

    Mixed in after the framework's ``SessionInterface``, which has the ``get_cookie_*``
    methods it uses.
    """

    session_class = ServerSideSession
    #: Sessions are stored as JSON, never pickled.
    pickle_based = False
    #: Where the adapter logs: the logger of the framework's integration module.
    _logger: ClassVar[logging.Logger]
    #: The store the framework needs: `Store` (Flask) or `AsyncStore` (Quart).
    _store_type: ClassVar[type[Store | AsyncStore]]

    if TYPE_CHECKING:  # the framework's SessionInterface has them

        def get_cookie_name(self, app: Any) -> str: ...
        def get_cookie_domain(self, app: Any) -> str | None: ...
        def get_cookie_path(self, app: Any) -> str: ...
        def get_cookie_secure(self, app: Any) -> bool: ...
        def get_cookie_httponly(self, app: Any) -> bool: ...
        def get_cookie_samesite(self, app: Any) -> str | None: ...

    def __init__(
        self,
        store: _Store,
        *,
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
        serializer: Any = None,
        lifetime: dt.timedelta | float | None = None,
        renew_after: float = DEFAULT_RENEW_AFTER,
        rotate_every: dt.timedelta | float | None = None,
        rotate_grace: dt.timedelta | float = DEFAULT_ROTATE_GRACE,
        record_devices: bool = False,
        secure: bool | None = None,
        samesite: str | None = "Lax",
    ) -> None:
        expected = self._store_type
        if not isinstance(store, expected):
            other = "Store" if expected is AsyncStore else "AsyncStore"
            raise TypeError(
                f"store must be a sessionstore.{expected.__name__}, not {type(store).__name__}"
                f" (use {expected.__name__}, not {other})"
            )
        self.store: _Store = store
        self.session_only_ttl = to_timedelta(session_only_ttl, "session_only_ttl")
        self.serializer: Any = TaggedJSONSerializer() if serializer is None else serializer
        self._defaults: dict[str, Any] = {
            "lifetime": lifetime,
            "renew_after": renew_after,
            "rotate_every": rotate_every,
            "rotate_grace": rotate_grace,
            "record_devices": record_devices,
        }
        self.secure, self.samesite = secure, samesite
        self._managers: dict[tuple[Any, ...], SessionManager] = {}
        self._manager(self.session_only_ttl, {})  # bad durations fail here, not per request

    def manager(self, app: Any, permanent: bool = True) -> SessionManager:
        """The `SessionManager` for `app`'s settings and a (non-)permanent session.

        Raises:
            TypeError, ValueError: If a setting is of the wrong type or out of range.
        """
        idle = app.permanent_session_lifetime if permanent else self.session_only_ttl
        return self._manager(idle, app.config)

    def _manager(self, idle: dt.timedelta, config: Any) -> SessionManager:
        """The manager for these settings, made on first use."""
        options: dict[str, Any] = {
            name: config.get(setting, self._defaults[name]) for name, setting in SETTINGS.items()
        }
        key = (idle, *options.values())
        manager = self._managers.get(key)
        if manager is None:
            manager = SessionManager(self._dumps, self._loads, idle_timeout=idle, **options)
            self._managers[key] = manager
        return manager

    def _dumps(self, data: dict[str, Any]) -> bytes:
        """Serialise a session's data for the store."""
        raw: bytes = self.serializer.dumps(data).encode()
        return raw

    def _loads(self, raw: bytes) -> dict[str, Any] | None:
        """Decode stored data (the manager treats anything but a dict as no session)."""
        data: dict[str, Any] | None = self.serializer.loads(raw.decode())
        return data

    def _save(
        self, app: Any, session: SessionMixin, response: Response | None, request: Request
    ) -> Steps[Outcome] | None:
        """The manager's save for this request; None when there is nothing to decide."""
        if not isinstance(session, ServerSideSession):
            raise TypeError(f"not a session of this interface: {type(session).__name__}")
        # Whether the request used the data, not ``accessed``: Quart 0.23 sets that on
        # every request when it saves (its ``ctx.session`` property marks it).
        if session.loaded and response is not None:
            merge_header(response.headers, "Vary", vary_with_cookie)
        loaded, data = session._loaded, session._data
        if loaded is None or data is None:
            return None  # untouched: nothing read, so nothing to write
        if not (session.modified or app.config["SESSION_REFRESH_EACH_REQUEST"]):
            return None  # Flask's setting: an unchanged session is never renewed
        fresh = session._renew or not loaded.found
        if response is None and fresh and data.keys() - {CREATED_KEY}:
            # A new token needs a cookie to carry it; a row no browser can name is waste.
            self._logger.warning(
                "a new or renewed session is not saved after a websocket: no cookie"
            )
            return None
        device = Device(request.remote_addr, request.headers.get("User-Agent"))
        manager = self.manager(app, session.permanent)
        return manager.save(loaded, data, renew=session._renew, device=device)

    def _respond(
        self,
        app: Any,
        session: ServerSideSession,
        response: Response | None,
        outcome: Outcome,
        request: Request,
    ) -> None:
        """Set or delete the cookie as the save decided, with SCS's headers."""
        session._token, session._found = outcome.token, outcome.token is not None
        session._renew = False
        if response is None or not outcome.cookie_changed:
            return
        name, options = self.get_cookie_name(app), self._cookie_options(app, request.host)
        if outcome.set_cookie and outcome.token is not None:
            # A browser-session cookie for a non-permanent session; never past the row.
            expires = outcome.expiry if session.permanent else None
            response.set_cookie(name, outcome.token, expires=expires, **options)
        else:
            response.delete_cookie(name, **options)
        merge_header(response.headers, "Vary", vary_with_cookie)
        # A shared cache may keep the page, never the cookie.
        merge_header(response.headers, "Cache-Control", cache_control_with_no_cache_set_cookie)

    def _cookie_options(self, app: Any, host: str | None) -> dict[str, Any]:
        """The cookie attributes: the app's ``SESSION_COOKIE_*``, then the safe defaults."""
        secure = self.secure if self.secure is not None else secure_by_default(host)
        options: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app) or secure,
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app) or self.samesite,
        }
        # Flask 3.1 and Quart 0.21 added SESSION_COOKIE_PARTITIONED; Quart 0.19 lacks it.
        partitioned = getattr(self, "get_cookie_partitioned", None)
        if partitioned is not None:
            options["partitioned"] = bool(partitioned(app))
        return options


def log_in(session: ServerSideSession, owner: str) -> None:
    """What ``login_session`` does: `SessionManager.log_in`, under a new token."""
    SessionManager.log_in(session._ensure(), owner)
    session.renew_token()


def live_token(session: ServerSideSession) -> str | None:
    """The token the session is stored under now, if it is one the store had."""
    return session.token if session.found else None


def current(
    caller: str, active: bool, framework: Any, expected: type[_Interface]
) -> tuple[_Interface, ServerSideSession]:
    """`framework`'s app's session interface and request's session; RuntimeError if none."""
    if not active:
        raise RuntimeError(f"{caller}() works only during a request")
    interface, session = framework.current_app.session_interface, framework.session
    if not isinstance(interface, expected) or not isinstance(session, ServerSideSession):
        raise RuntimeError(
            f"{caller}() needs app.session_interface = PostgresSessionInterface(store)"
        )
    return interface, session
