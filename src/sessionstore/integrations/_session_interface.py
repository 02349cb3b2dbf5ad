"""What the Flask and Quart integrations share: the session, its save, cookie and headers.

Quart's session API is Flask's (its ``SessionMixin`` is Flask's own, its responses
are werkzeug's), so one session class and one save serve both frameworks. The save
is written once, as a generator that decides everything (what to write, the cookie,
SCS's headers) and yields the store calls it needs, getting their results back, as
psycopg's generators yield where they must wait: `run_save` drives it on a `Store`
(Flask), `arun_save` on an `AsyncStore` (Quart).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NotRequired, TypedDict, TypeVar

from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionMixin
from werkzeug.sansio.response import Response

from .._core import OwnedSession, validate_owner
from ..store import Store
from ..store_async import AsyncStore
from ._common import (
    OWNER_KEY,
    UserSession,
    cache_control_with_no_cache_set_cookie,
    create_fresh,
    create_fresh_sync,
    is_token,
    listing,
    owner_of,
    to_timedelta,
    vary_with_cookie,
)

_Interface = TypeVar("_Interface")
_Store = TypeVar("_Store", Store, AsyncStore)


class _CookieOptions(TypedDict):
    domain: str | None
    path: str
    secure: bool
    httponly: bool
    samesite: str | None
    partitioned: NotRequired[bool]


class ServerSideSession(SessionMixin):
    """The session of one request: a mapping whose data is loaded on first use.

    Views use it as ``flask.session`` (``quart.session``), like the framework's own
    session. Beyond the mapping and `SessionMixin` (``permanent``, ``modified``,
    ``accessed``, ``new``), it has `loaded`, `found`, `owner`, `renew_token` and
    `token`.

    Args:
        token: The token from the request's cookie, if it has the shape of one.
        loader: Gives the data of `token`, or None if the store has no live session
            for it; called on first use, never if `token` is None. Flask's reads the
            store then; Quart's hands over what was read when the request started.
        had_cookie: Whether the request sent a session cookie at all (else an
            emptied session has no cookie to delete).
    """

    def __init__(
        self,
        token: str | None = None,
        loader: Callable[[str], dict[str, Any] | None] | None = None,
        *,
        had_cookie: bool = False,
    ) -> None:
        self.had_cookie = had_cookie or token is not None
        self._token = token
        self._loader = loader
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
        """The user this session belongs to (set by `login_session`), or None.

        Raises:
            sessionstore.DatabaseError: If the session's data could not be read.
        """
        return owner_of(self._ensure())

    def renew_token(self) -> None:
        """Give this session a new token when the response is saved, keeping its data.

        The row of the old token is deleted, so a token an attacker planted before the
        login (session fixation) or saw before it is worthless afterwards. Call it on
        login, logout-to-anonymous and any change of privilege, as SCS's
        ``RenewToken``.

        Raises:
            sessionstore.DatabaseError: If the session's data could not be read.
        """
        self._ensure()
        self._renew = True
        self.modified = True

    def _ensure(self) -> dict[str, Any]:
        """Return the data, reading it from the store the first time."""
        if self._data is None:
            data = None
            if self._token is not None and self._loader is not None:
                data = self._loader(self._token)
            self._found = data is not None
            self.new = not self._found
            self._data = {} if data is None else data
        self.accessed = True
        return self._data

    def _keeps_token(self) -> bool:
        """Whether the save keeps the cookie's token (else it issues a fresh one).

        Only a token that named a live session, neither renewed nor cleared, is kept.
        """
        return self._found and not self._renew and self._token is not None

    def _adopt(self, token: str) -> None:
        """Record the fresh token the session was just saved under."""
        self._token = token
        self._found = True
        self._renew = False

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

    def __contains__(self, key: object) -> bool:
        return key in self._ensure()

    def clear(self) -> None:
        """Remove all the data; the row and the cookie are deleted at the response.

        Needs no query: the old data is not read. If data is stored again in this
        request, it is saved under a new token and the old row is deleted all the same.
        """
        self._data = {}
        self._found = False
        self.accessed = True
        self.modified = True

    def __repr__(self) -> str:
        # Never the token: reprs end up in logs and error pages.
        data = "(not loaded)" if self._data is None else repr(self._data)
        return f"<{type(self).__name__} {data}>"


@dataclass(frozen=True)
class Delete:
    """Delete the row of `token`."""

    token: str


@dataclass(frozen=True)
class Commit:
    """Write the whole session under `token`."""

    token: str
    data: bytes
    expiry: dt.datetime
    owner: str | None


@dataclass(frozen=True)
class Touch:
    """Move the expiry of `token`'s live row; the result: whether there was one."""

    token: str
    expiry: dt.datetime


@dataclass(frozen=True)
class Create:
    """Save a new session under a fresh token; the result: that token."""

    data: bytes
    expiry: dt.datetime
    owner: str | None


#: A store call the save needs.
Step = Delete | Commit | Touch | Create
#: The save: yields the store calls, is sent their results.
Save = Generator[Step, object, None]


def run_save(save: Save, store: Store) -> None:
    """Run a save's store calls on a `Store`.

    Raises:
        sessionstore.DatabaseError: If the store failed.
    """
    with contextlib.closing(save):
        result: object = None
        while True:
            try:
                step = save.send(result)
            except StopIteration:
                return
            result = _call(step, store)


async def arun_save(save: Save, store: AsyncStore) -> None:
    """Run a save's store calls on an `AsyncStore`.

    Raises:
        sessionstore.DatabaseError: If the store failed.
    """
    with contextlib.closing(save):
        result: object = None
        while True:
            try:
                step = save.send(result)
            except StopIteration:
                return
            result = await _acall(step, store)


def _call(step: Step, store: Store) -> object:
    if isinstance(step, Delete):
        store.delete(step.token)
    elif isinstance(step, Commit):
        store.commit(step.token, step.data, step.expiry, owner=step.owner)
    elif isinstance(step, Touch):
        return store.touch(step.token, step.expiry)
    else:
        return create_fresh_sync(
            lambda token: store.create(token, step.data, step.expiry, owner=step.owner)
        )
    return None


async def _acall(step: Step, store: AsyncStore) -> object:
    if isinstance(step, Delete):
        await store.delete(step.token)
    elif isinstance(step, Commit):
        await store.commit(step.token, step.data, step.expiry, owner=step.owner)
    elif isinstance(step, Touch):
        return await store.touch(step.token, step.expiry)
    else:
        return await create_fresh(
            lambda token: store.create(token, step.data, step.expiry, owner=step.owner)
        )
    return None


class ServerSideInterface:
    """The half of a ``PostgresSessionInterface`` that Flask and Quart share.

    Mixed in after the framework's ``SessionInterface``, which provides the
    ``get_cookie_*``, ``get_expiration_time`` and ``should_set_cookie`` it uses.
    """

    session_class = ServerSideSession
    #: Sessions are stored as JSON, never pickled.
    pickle_based = False
    #: Where the save logs: the logger of the framework's integration module.
    _logger: ClassVar[logging.Logger]

    if TYPE_CHECKING:  # the framework's SessionInterface has them

        def get_cookie_name(self, app: Any) -> str: ...
        def get_cookie_domain(self, app: Any) -> str | None: ...
        def get_cookie_path(self, app: Any) -> str: ...
        def get_cookie_secure(self, app: Any) -> bool: ...
        def get_cookie_httponly(self, app: Any) -> bool: ...
        def get_cookie_samesite(self, app: Any) -> str | None: ...
        def get_expiration_time(self, app: Any, session: SessionMixin) -> dt.datetime | None: ...
        def should_set_cookie(self, app: Any, session: SessionMixin) -> bool: ...

    def _configure(
        self,
        store: _Store,
        expected: type[_Store],
        session_only_ttl: dt.timedelta | float,
        serializer: Any,
    ) -> _Store:
        """Check and keep the options both interfaces take; return the checked store."""
        if not isinstance(store, expected):
            other = "Store" if expected is AsyncStore else "AsyncStore"
            raise TypeError(
                f"store must be a sessionstore.{expected.__name__}, not {type(store).__name__}"
                f" (use {expected.__name__}, not {other})"
            )
        self.session_only_ttl = to_timedelta(session_only_ttl, "session_only_ttl")
        self.serializer: Any = TaggedJSONSerializer() if serializer is None else serializer
        return store

    def _cookie_token(self, app: Any, cookies: Any) -> tuple[str | None, bool]:
        """The token the request's cookies hold, if one has its shape; and whether any did."""
        value = cookies.get(self.get_cookie_name(app))
        if value is not None and not is_token(value):
            self._logger.debug("ignoring a session cookie that is not a token; new session")
        return (value if is_token(value) else None), value is not None

    def _dump(self, session: ServerSideSession) -> bytes:
        """Serialise the session's data for the store."""
        data: bytes = self.serializer.dumps(dict(session)).encode()
        return data

    def _decode(self, raw: bytes) -> dict[str, Any] | None:
        """Decode stored data; None if it is not a JSON object."""
        try:
            data = self.serializer.loads(raw.decode())
        except (UnicodeDecodeError, ValueError, TypeError, KeyError):
            return None
        return data if isinstance(data, dict) else None

    def _loaded(self, raw: bytes | None) -> dict[str, Any] | None:
        """What the store's ``find`` returned, decoded; None if missing or undecodable."""
        if raw is None:
            self._logger.debug("no live session for the cookie's token; new session")
            return None
        data = self._decode(raw)
        if data is None:
            self._logger.warning("stored session data is not a JSON object; starting a new session")
            return None
        return data

    def _listing(self, owned: list[OwnedSession], session: ServerSideSession) -> list[UserSession]:
        """The owner's sessions as `user_sessions` returns them."""
        return listing(owned, live_token(session), lambda raw: self._decode(raw) or {})

    def _save(self, app: Any, session: SessionMixin, response: Response | None) -> Save:
        """Save the session and set (or delete) its cookie, if the request used it.

        Args:
            app: The application.
            session: The session ``open_session`` returned.
            response: The response, to set the cookie on; None after a Quart
                websocket, which can set no cookie.

        Yields:
            The store calls to make; each is sent its result.

        Raises:
            TypeError: If `session` is not a `ServerSideSession`, or holds data the
                serializer cannot encode.
            ValueError: If the encoded session is larger than the store's
                ``max_data_size``.
        """
        if not isinstance(session, ServerSideSession):
            raise TypeError(f"not a session of this interface: {type(session).__name__}")
        if session.accessed and response is not None:
            merge_header(response, "Vary", vary_with_cookie)
        if not session.loaded:
            return  # untouched: nothing read, so nothing to write
        if not session:
            if session.modified:
                if session.token is not None:
                    yield Delete(session.token)
                    self._logger.debug("session emptied: row deleted")
                if session.had_cookie:
                    self._delete_cookie(app, response)
            return
        refresh = bool(app.config["SESSION_REFRESH_EACH_REQUEST"])
        if not (session.modified or refresh):
            return
        expires = self.get_expiration_time(app, session)
        expiry = expires if expires is not None else dt.datetime.now(dt.UTC) + self.session_only_ttl
        token = session.token
        if token is not None and session._keeps_token():
            if session.modified:
                yield Commit(token, self._dump(session), expiry, session.owner)
            elif not (yield Touch(token, expiry)):
                # Deleted since it was read (logged out on another device, or expired
                # during the request): writing the data back would resurrect it, so it
                # stays gone and the browser drops its cookie.
                self._logger.debug("session gone since it was read: not saved, cookie deleted")
                self._delete_cookie(app, response)
                return
            if self.should_set_cookie(app, session):
                self._set_cookie(app, response, token, expires)
            return
        if response is None:
            # A new token needs a cookie to carry it; a row no browser can name is waste.
            self._logger.warning(
                "a new or renewed session is not saved after a websocket: no cookie"
            )
            return
        if token is not None:
            # Delete first: if the save then fails, the old token is dead anyway.
            yield Delete(token)
            self._logger.debug("new token for the session: old row deleted")
        fresh = yield Create(self._dump(session), expiry, session.owner)
        assert isinstance(fresh, str)
        session._adopt(fresh)
        self._set_cookie(app, response, fresh, expires)

    def _set_cookie(
        self, app: Any, response: Response | None, token: str, expires: dt.datetime | None
    ) -> None:
        """Set the session cookie, with the headers SCS sends beside it."""
        if response is not None:
            name = self.get_cookie_name(app)
            response.set_cookie(name, token, expires=expires, **self._cookie_options(app))
            cookie_headers(response)

    def _delete_cookie(self, app: Any, response: Response | None) -> None:
        """Delete the session cookie, with the headers SCS sends beside it."""
        if response is not None:
            response.delete_cookie(self.get_cookie_name(app), **self._cookie_options(app))
            cookie_headers(response)

    def _cookie_options(self, app: Any) -> _CookieOptions:
        """The cookie attributes from the app's ``SESSION_COOKIE_*`` settings."""
        options: _CookieOptions = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app),
        }
        # Flask 3.1 and Quart 0.21 added SESSION_COOKIE_PARTITIONED; Quart 0.19 lacks it.
        partitioned = getattr(self, "get_cookie_partitioned", None)
        if partitioned is not None:
            options["partitioned"] = bool(partitioned(app))
        return options


def log_in(session: ServerSideSession, owner: str) -> None:
    """What ``login_session`` does: renew the token, and make `owner` the session's.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    validate_owner(owner)
    session.renew_token()
    session[OWNER_KEY] = owner


def live_token(session: ServerSideSession) -> str | None:
    """The token the session is stored under now, if it is one the store had."""
    return session.token if session.found else None


def current(
    caller: str, active: bool, interface: object, session: object, expected: type[_Interface]
) -> tuple[_Interface, ServerSideSession]:
    """The app's session interface and the request's session, checked.

    Args:
        caller: The helper's name, for the error message.
        active: Whether a request (or websocket) is being handled.
        interface: The app's ``session_interface``.
        session: The request's session.
        expected: The interface class the helper needs.

    Returns:
        The interface and the session.

    Raises:
        RuntimeError: Outside a request, or with another session interface.
    """
    if not active:
        raise RuntimeError(f"{caller}() works only during a request")
    if not isinstance(interface, expected) or not isinstance(session, ServerSideSession):
        raise RuntimeError(
            f"{caller}() needs app.session_interface = PostgresSessionInterface(store)"
        )
    return interface, session


def cookie_headers(response: Response) -> None:
    """Merge in what SCS sends with its cookie: ``Vary`` and ``Cache-Control``.

    A shared cache may keep the page, never the cookie: one user's token must not be
    handed to another.
    """
    merge_header(response, "Vary", vary_with_cookie)
    merge_header(response, "Cache-Control", cache_control_with_no_cache_set_cookie)


def merge_header(response: Response, name: str, merge: Callable[[list[str]], str | None]) -> None:
    """Set header `name` to what `merge` makes of all its values, if that changes it.

    Werkzeug's ``response.vary`` reads only the first ``Vary`` header and rewrites it,
    dropping any others; this reads them all and replaces them with one.
    """
    value = merge(response.headers.getlist(name))
    if value is not None:
        response.headers[name] = value
