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
- `renew_token` gives the session a new token and deletes the old row, keeping the
  data: call it on login and privilege changes (session fixation defence).
- The data is serialised as JSON with Flask's own tagged JSON (the serializer of
  Flask's cookie sessions, which also keeps tuples, bytes, datetimes, UUIDs and
  Markup), never with pickle: nothing read from the database is ever unpickled.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

from ._common import DEFAULT_SESSION_ONLY_TTL, is_token, missing_extra, new_token, to_timedelta

try:
    import flask
    from flask.json.tag import TaggedJSONSerializer
    from flask.sessions import SessionInterface, SessionMixin
    from flask.wrappers import Request, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra(__name__, "flask", exc) from exc

from ..store import Store

__all__ = ["PostgresSessionInterface", "ServerSideSession", "renew_token"]

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
    has `loaded`, `renew_token` and `token`.

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

    def _issue(self) -> tuple[str, str | None]:
        """Decide the token to save under; return it and the old token whose row must go.

        The cookie's token is kept only if it named a live session that was neither
        renewed nor cleared; otherwise a new one is issued, and the old token's row
        (if any: it may have been cleared unread) is to be deleted.
        """
        if self._found and not self._renew and self._token is not None:
            return self._token, None
        old = self._token
        self._token = new_token()
        self._found = True
        self._renew = False
        return self._token, old

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
    non-empty session is saved at the end of every request when
    ``SESSION_REFRESH_EACH_REQUEST`` is true (Flask's default), so both are idle
    timeouts; set it to false for absolute ones (saved only when modified).

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
            response.vary.add("Cookie")
        if not session.loaded:
            return  # untouched: nothing read, so nothing to write
        name = self.get_cookie_name(app)
        if not session:
            if session.modified:
                if session.token is not None:
                    self.store.delete(session.token)
                    logger.debug("session emptied: row deleted")
                if session.had_cookie:
                    response.delete_cookie(name, **self._cookie_options(app))
                    response.vary.add("Cookie")
            return
        refresh = bool(app.config["SESSION_REFRESH_EACH_REQUEST"])
        if not (session.modified or refresh):
            return
        previous = session.token
        token, old = session._issue()
        if old is not None:
            # Delete first: if the commit then fails, the old token is dead anyway.
            self.store.delete(old)
            logger.debug("new token for the session: old row deleted")
        expires = self.get_expiration_time(app, session)
        now = dt.datetime.now(dt.UTC)
        expiry = expires if expires is not None else now + self.session_only_ttl
        data = self.serializer.dumps(dict(session)).encode()
        self.store.commit(token, data, expiry)
        if token != previous or self.should_set_cookie(app, session):
            response.set_cookie(name, token, expires=expires, **self._cookie_options(app))
            response.vary.add("Cookie")

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
        try:
            data = self.serializer.loads(raw.decode())
        except (UnicodeDecodeError, ValueError, TypeError, KeyError):
            data = None
        if not isinstance(data, dict):
            logger.warning("stored session data is not a JSON object; starting a new session")
            return None
        return data


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
    if not flask.has_request_context():
        raise RuntimeError("renew_token() works only during a request")
    session = flask.session
    if not isinstance(session, ServerSideSession):
        raise RuntimeError(
            "renew_token() needs app.session_interface = PostgresSessionInterface(store)"
        )
    session.renew_token()
