"""Server-side Flask sessions in PostgreSQL: a ``SessionInterface`` on `Store`.

Install with ``pip install "sessionstore[flask]"``, then::

    from flask import Flask
    from psycopg_pool import ConnectionPool

    from sessionstore import Store
    from sessionstore.integrations.flask import PostgresSessionInterface

    pool = ConnectionPool(dsn, kwargs={"autocommit": True})
    store = Store(pool)
    app = Flask(__name__)
    app.session_interface = PostgresSessionInterface(store)

The session's data lives in the sessions table; the cookie holds only a random token
(32 bytes, url-safe base64, as SCS issues them), so no ``SECRET_KEY`` is needed for
sessions. Flask's cookie settings apply (``SESSION_COOKIE_NAME``, ``_DOMAIN``,
``_PATH``, ``_SECURE``, ``_HTTPONLY``, ``_SAMESITE``, ``_PARTITIONED``,
``PERMANENT_SESSION_LIFETIME``, ``SESSION_REFRESH_EACH_REQUEST`` and
``session.permanent``).

- The session is read from the database the first time the request uses it; a
  request that never touches ``flask.session`` costs no query and sets no cookie.
- A token the database does not know (expired, deleted, made up or tampered with) is
  never reused: the request gets a new, empty session and, once something is stored
  in it, a new token.
- An emptied session (``session.clear()``) deletes its row and its cookie.
- A request that only read the session (``SESSION_REFRESH_EACH_REQUEST``) moves the
  row's expiry with the store's ``touch``, without rewriting the data; if the session
  was deleted meanwhile (logged out elsewhere), it stays deleted.
- A new session, and a renewed one, is saved with the store's ``create`` under a fresh
  token: a token that happens to be taken is never overwritten.
- `renew_token` gives the session a new token and deletes the old row, keeping the
  data: call it on login and privilege changes (session fixation defence).
- Sessions per user (a store with ``owners=True``): `login_session` renews the token
  and makes the session the user's, `user_sessions` lists the user's sessions and
  `logout_everywhere` ends all of them but the current one.
- The data is serialised as JSON with Flask's own tagged JSON (the serializer of
  Flask's cookie sessions, which also keeps tuples, bytes, datetimes, UUIDs and
  Markup), never with pickle: nothing read from the database is ever unpickled.
- Headers as SCS sends them: every response of a request that used the session
  carries ``Vary: Cookie``, and one that sets or deletes the cookie ``Cache-Control:
  no-cache="Set-Cookie"`` (both merged into the values the view set), so no shared
  cache hands one user's page or cookie to another.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

from .._core import validate_owner
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    OWNER_KEY,
    UserSession,
    cache_control_with_no_cache_set_cookie,
    create_fresh_sync,
    is_token,
    listing,
    missing_extra,
    owner_of,
    to_timedelta,
    vary_with_cookie,
)

try:
    import flask
    from flask.json.tag import TaggedJSONSerializer
    from flask.sessions import SessionInterface, SessionMixin
    from flask.wrappers import Request, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "flask", exc) from exc

from ..store import Store

__all__ = [
    "PostgresSessionInterface",
    "ServerSideSession",
    "UserSession",
    "login_session",
    "logout_everywhere",
    "renew_token",
    "session_owner",
    "user_sessions",
]

logger = logging.getLogger(__name__)


class _CookieOptions(TypedDict):
    domain: str | None
    path: str
    secure: bool
    httponly: bool
    samesite: str | None
    partitioned: bool


class ServerSideSession(SessionMixin):
    """The session of one request: a mapping loaded from the store on first use.

    Views use it as ``flask.session``, like Flask's own session. Beyond the mapping
    and `SessionMixin` (``permanent``, ``modified``, ``accessed``, ``new``), it
    has `loaded`, `found`, `owner`, `renew_token` and `token`.

    Args:
        token: The token from the request's cookie, if it has the shape of one.
        loader: Reads the data of `token` from the store; returns None if the
            store has no live session for it. Not called if `token` is None.
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
        """Whether the data was read (or replaced) during this request."""
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


class PostgresSessionInterface(SessionInterface):
    """Flask's session interface, with the sessions stored through a `Store`.

    Set it as ``app.session_interface``. The store (and its pool) is the
    application's to close.

    Expiry of the row: a permanent session (``session.permanent = True``) expires
    ``PERMANENT_SESSION_LIFETIME`` after it was last saved, as its cookie does. Any
    other session has a cookie that lasts until the browser closes, which the server
    never learns; its row expires `session_only_ttl` after it was last saved. A loaded,
    non-empty session has its expiry moved at the end of every request when
    ``SESSION_REFRESH_EACH_REQUEST`` is true (Flask's default), so both are idle
    timeouts; set it to false for absolute ones (saved only when modified). A
    modified session is written whole (``commit``); an unmodified one only gets its
    expiry moved (``touch``), so a write made meanwhile by another request is kept.

    Args:
        store: The store to keep sessions in.
        session_only_ttl: How long the row of a non-permanent session lives after
            its last save: a `datetime.timedelta` or seconds (default 24 hours).
        serializer: Turns the session's dict into text and back: any object with
            ``dumps(dict) -> str`` and ``loads(str) -> Any``. Default: Flask's
            tagged JSON. Data that does not load back as a dict is treated as no
            session (and logged).

    Raises:
        TypeError: If `store` is not a `Store`, or `session_only_ttl` is neither
            a timedelta nor a number.
        ValueError: If `session_only_ttl` is not positive.
    """

    session_class = ServerSideSession
    #: Sessions are stored as JSON, never pickled.
    pickle_based = False

    def __init__(
        self,
        store: Store,
        *,
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
        serializer: Any = None,
    ) -> None:
        if not isinstance(store, Store):
            raise TypeError(
                f"store must be a sessionstore.Store, not {type(store).__name__}"
                " (Flask is synchronous: use Store, not AsyncStore)"
            )
        self.store = store
        self.session_only_ttl = to_timedelta(session_only_ttl, "session_only_ttl")
        self.serializer: Any = TaggedJSONSerializer() if serializer is None else serializer

    def open_session(self, app: flask.Flask, request: Request) -> ServerSideSession:
        """Return the request's session; nothing is read from the store yet.

        Args:
            app: The application.
            request: The request.

        Returns:
            The session, which reads its data when first used.
        """
        value = request.cookies.get(self.get_cookie_name(app))
        if value is not None and not is_token(value):
            logger.debug("ignoring a session cookie that is not a token; new session")
        token = value if is_token(value) else None
        return self.session_class(token, self._load, had_cookie=value is not None)

    def save_session(self, app: flask.Flask, session: SessionMixin, response: Response) -> None:
        """Save the session and set (or delete) its cookie, if the request used it.

        Args:
            app: The application.
            session: The session `open_session` returned.
            response: The response, to set the cookie on.

        Raises:
            TypeError: If `session` is not a `ServerSideSession`, or holds data the
                serializer cannot encode.
            ValueError: If the encoded session is larger than the store's
                ``max_data_size``.
            sessionstore.DatabaseError: If the store failed.
        """
        if not isinstance(session, ServerSideSession):
            raise TypeError(f"not a session of this interface: {type(session).__name__}")
        if session.accessed:
            _merge_header(response, "Vary", vary_with_cookie)
        if not session.loaded:
            return  # untouched: nothing read, so nothing to write
        if not session:
            if session.modified:
                if session.token is not None:
                    self.store.delete(session.token)
                    logger.debug("session emptied: row deleted")
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
                self.store.commit(token, self._dump(session), expiry, owner=session.owner)
            elif not self.store.touch(token, expiry):
                # Deleted since it was read (logged out on another device, or expired
                # during the request): writing the data back would resurrect it, so it
                # stays gone and the browser drops its cookie.
                logger.debug("session gone since it was read: not saved, cookie deleted")
                self._delete_cookie(app, response)
                return
            if self.should_set_cookie(app, session):
                self._set_cookie(app, response, token, expires)
            return
        if token is not None:
            # Delete first: if the save then fails, the old token is dead anyway.
            self.store.delete(token)
            logger.debug("new token for the session: old row deleted")
        data, owner = self._dump(session), session.owner
        token = create_fresh_sync(lambda fresh: self.store.create(fresh, data, expiry, owner=owner))
        session._adopt(token)
        self._set_cookie(app, response, token, expires)

    def _set_cookie(
        self, app: flask.Flask, response: Response, token: str, expires: dt.datetime | None
    ) -> None:
        """Set the session cookie, with the headers SCS sends beside it."""
        name = self.get_cookie_name(app)
        response.set_cookie(name, token, expires=expires, **self._cookie_options(app))
        _cookie_headers(response)

    def _delete_cookie(self, app: flask.Flask, response: Response) -> None:
        """Delete the session cookie, with the headers SCS sends beside it."""
        response.delete_cookie(self.get_cookie_name(app), **self._cookie_options(app))
        _cookie_headers(response)

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

    def _cookie_options(self, app: flask.Flask) -> _CookieOptions:
        """The cookie attributes from the app's ``SESSION_COOKIE_*`` settings."""
        return {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app),
            "partitioned": self.get_cookie_partitioned(app),
        }

    def _load(self, token: str) -> dict[str, Any] | None:
        """Read and decode a session; None if missing, expired or undecodable."""
        raw = self.store.find(token)
        if raw is None:
            logger.debug("no live session for the cookie's token; new session")
            return None
        data = self._decode(raw)
        if data is None:
            logger.warning("stored session data is not a JSON object; starting a new session")
            return None
        return data


def _cookie_headers(response: Response) -> None:
    """Merge in what SCS sends with its cookie: ``Vary`` and ``Cache-Control``.

    A shared cache may keep the page, never the cookie: one user's token must not be
    handed to another.
    """
    _merge_header(response, "Vary", vary_with_cookie)
    _merge_header(response, "Cache-Control", cache_control_with_no_cache_set_cookie)


def _merge_header(response: Response, name: str, merge: Callable[[list[str]], str | None]) -> None:
    """Set header `name` to what `merge` makes of all its values, if that changes it.

    Werkzeug's ``response.vary`` reads only the first ``Vary`` header and rewrites it,
    dropping any others; this reads them all and replaces them with one.
    """
    value = merge(response.headers.getlist(name))
    if value is not None:
        response.headers[name] = value


def _current(caller: str) -> tuple[PostgresSessionInterface, ServerSideSession]:
    """The app's session interface and the request's session, checked."""
    if not flask.has_request_context():
        raise RuntimeError(f"{caller}() works only during a request")
    interface = flask.current_app.session_interface
    session = flask.session
    if not isinstance(interface, PostgresSessionInterface) or not isinstance(
        session, ServerSideSession
    ):
        raise RuntimeError(
            f"{caller}() needs app.session_interface = PostgresSessionInterface(store)"
        )
    return interface, session


def renew_token() -> None:
    """Give the current request's session a new token, keeping its data.

    At the end of the request the session is saved under a fresh token, the old
    token's row is deleted and the new cookie is sent. Call it on login (session
    fixation defence)::

        @app.post("/login")
        def login():
            ...  # check the credentials
            renew_token()
            session["user_id"] = user.id

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    _current("renew_token")[1].renew_token()


def login_session(owner: str) -> None:
    """Log the current request's session in as `owner`: new token, owned by the user.

    The session gets a new token (as `renew_token`), and at the end of the request
    it is saved as `owner`'s session, so `user_sessions` lists it and
    `logout_everywhere` can end it. Needs a store with ``owners=True``::

        @app.post("/login")
        def login():
            user = authenticate(request.form["name"], request.form["password"])
            login_session(str(user.id))
            session["user_id"] = user.id

    The owner is kept in the session's data (under ``"_session_owner"``), so
    `ServerSideSession.owner` tells it on every later request and every save keeps
    the row owned. ``session.clear()`` (logout) drops it with everything else.

    Args:
        owner: Who the session belongs to: the user id, as text.

    Raises:
        TypeError: If `owner` is not a str.
        ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    validate_owner(owner)
    session = _current("login_session")[1]
    session.renew_token()
    session[OWNER_KEY] = owner


def session_owner() -> str | None:
    """The user the current request's session belongs to (set by `login_session`).

    The same as ``session.owner``, for code that sees ``flask.session`` typed as
    Flask's ``SessionMixin``.

    Returns:
        The owner, or None for a session nobody logged in.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.DatabaseError: If the session's data could not be read.
    """
    return _current("session_owner")[1].owner


def user_sessions() -> list[UserSession]:
    """List the live sessions of the current session's owner ("where am I logged in").

    Returns:
        The sessions, soonest to expire first, the current one marked `current`;
            empty if the session belongs to nobody (not logged in with
            `login_session`). Show users only a prefix of each `UserSession.key`.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("user_sessions")
    owner = session.owner
    if owner is None:
        return []
    owned = interface.store.sessions_of(owner)
    return listing(owned, _live_token(session), lambda raw: interface._decode(raw) or {})


def logout_everywhere() -> int:
    """End every other session of the current session's owner, at once.

    The current session stays logged in; the others are deleted now, so their next
    request gets an empty session. To end the current one as well, call
    ``session.clear()`` after this. Needs a store with ``owners=True``::

        @app.post("/logout-everywhere")
        def logout_everywhere_view():
            ended = logout_everywhere()
            return f"Logged out {ended} other sessions."

    Returns:
        How many sessions were deleted; 0 if the session belongs to nobody.

    Raises:
        RuntimeError: If called outside a request, or the app's session interface is
            not a `PostgresSessionInterface`.
        sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        sessionstore.DatabaseError: If the store failed.
    """
    interface, session = _current("logout_everywhere")
    owner = session.owner
    if owner is None:
        return 0
    ended = interface.store.delete_owned(owner, keep=_live_token(session))
    logger.debug("logged out everywhere else: %d sessions deleted", ended)
    return ended


def _live_token(session: ServerSideSession) -> str | None:
    """The token the session is stored under now, if it is one the store had."""
    return session.token if session.found else None
