"""aiohttp sessions in PostgreSQL, an aiohttp-session storage: docs/integrations-aiohttp.md."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ..manager import (
    CREATED_KEY,
    DEFAULT_RENEW_AFTER,
    DEFAULT_ROTATE_GRACE,
    Device,
    Loaded,
    Outcome,
    SessionManager,
    UserSession,
    arun,
    owner_of,
    to_timedelta,
)
from ..manager import secure_by_default as _secure_by_default
from ._common import (
    DEFAULT_SESSION_ONLY_TTL,
    cache_control_with_no_cache_set_cookie,
    merge_header,
    missing_extra,
    vary_with_cookie,
)

try:
    from aiohttp import web
    from aiohttp_session import (
        SESSION_KEY,
        STORAGE_KEY,
        AbstractStorage,
        Session,
        get_session,
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
    "revoke",
    "session_owner",
    "setup",
    "signed_in_within",
    "user_sessions",
    "vary_cookie",
]


@dataclass
class _State:
    """What the storage knows of the current request's session."""

    storage: PostgresStorage
    loaded: Loaded
    renew: bool = False


#: The current request's `_State`: aiohttp-session's ``new_session()`` calls the
#: storage without the request, and this is how it knows which row it replaces.
_current: contextvars.ContextVar[_State | None] = contextvars.ContextVar(
    "sessionstore_aiohttp", default=None
)


class PostgresStorage(AbstractStorage):
    """An aiohttp-session storage that keeps sessions in PostgreSQL.

    Its options are in docs/integrations-aiohttp.md; a bad one raises TypeError or ValueError.
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
        samesite: str | None = "Lax",
        session_only_ttl: dt.timedelta | float = DEFAULT_SESSION_ONLY_TTL,
        lifetime: dt.timedelta | float | None = None,
        renew_after: float = DEFAULT_RENEW_AFTER,
        rotate_every: dt.timedelta | float | None = None,
        rotate_grace: dt.timedelta | float = DEFAULT_ROTATE_GRACE,
        record_devices: bool = False,
        encoder: Callable[[object], str] = json.dumps,
        decoder: Callable[[str], Any] = json.loads,
    ) -> None:
        if not isinstance(store, AsyncStore):
            raise TypeError(f"store must be a sessionstore.AsyncStore, not {type(store).__name__}")
        idle = to_timedelta(session_only_ttl, "session_only_ttl")
        if max_age is not None:
            idle = to_timedelta(max_age, "max_age")
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
        self.manager = SessionManager(
            self._dumps,
            self._loads,
            idle_timeout=idle,
            lifetime=lifetime,
            renew_after=renew_after,
            rotate_every=rotate_every,
            rotate_grace=rotate_grace,
            record_devices=record_devices,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.store.name}>"

    def _dumps(self, data: dict[str, Any]) -> bytes:
        """aiohttp-session's layout: the creation time beside the session's keys."""
        session = {key: value for key, value in data.items() if key != CREATED_KEY}
        return self._encoder({"created": data.get(CREATED_KEY), "session": session}).encode()

    def _loads(self, raw: bytes) -> dict[str, Any] | None:
        """The session's keys (and its creation time) from aiohttp-session's layout."""
        layout = self._decoder(raw.decode())
        if not isinstance(layout, dict) or not isinstance(layout.get("session"), dict):
            return None
        data = dict(layout["session"])
        if isinstance(layout.get("created"), int | float):
            data[CREATED_KEY] = layout["created"]
        return data

    async def new_session(self) -> Session:
        """A new, empty session (aiohttp-session's ``new_session``); the loaded row goes now."""
        state = _state(self)
        if state is not None:
            await arun(self.manager.save(state.loaded, {}), self.store)  # deletes the row
            state.loaded, state.renew = Loaded(None, state.loaded.had_cookie), False
        session = Session(None, data=None, new=True, max_age=self.max_age)
        session.changed()  # saved, so that an old cookie is deleted
        return session

    async def load_session(self, request: web.Request) -> Session:
        """Load the session the cookie names through the manager; a new one if none."""
        loaded = await arun(self.manager.load(self.load_cookie(request)), self.store)
        _current.set(_State(self, loaded))
        data = {key: value for key, value in loaded.data.items() if key != CREATED_KEY}
        layout: Any = {"created": int(time.time()), "session": data} if loaded.found else None
        session = Session(loaded.token if loaded.found else None, data=layout, new=not loaded.found)
        # aiohttp-session saves only a changed session; the manager decides what a
        # save writes (usually nothing) and renews an unchanged one when due.
        session.changed()
        return session

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        """Save the session as the manager decides, and set or delete its cookie."""
        # Or saved without being loaded:
        state = _state(self) or _State(self, Loaded(None, self.load_cookie(request) is not None))
        data = dict(session)
        if CREATED_KEY in state.loaded.data:
            data[CREATED_KEY] = state.loaded.data[CREATED_KEY]
        device = Device(request.remote, request.headers.get("User-Agent"))
        steps = self.manager.save(state.loaded, data, renew=state.renew, device=device)
        self._apply(request, response, await arun(steps, self.store))

    def _apply(self, request: web.Request, response: web.StreamResponse, outcome: Outcome) -> None:
        """Set or delete the cookie as `outcome` says, and mark the change for caches."""
        params: dict[str, Any] = dict(self.cookie_params)
        if params["secure"] is None:
            params["secure"] = _secure_by_default(request.host)
        if outcome.delete_cookie:
            response.del_cookie(self.cookie_name, domain=params["domain"], path=params["path"])
        elif outcome.set_cookie and outcome.token is not None:
            if self.max_age is not None and outcome.max_age is not None:
                params["max_age"] = outcome.max_age
                params["expires"] = time.strftime(
                    "%a, %d-%b-%Y %T GMT", time.gmtime(time.time() + params["max_age"])
                )
            response.set_cookie(self.cookie_name, outcome.token, **params)
        if outcome.cookie_changed:
            merge_header(response.headers, "Cache-Control", cache_control_with_no_cache_set_cookie)


async def vary_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` signal: ``Vary: Cookie`` if the request used the session."""
    if request.get(SESSION_KEY) is not None:
        merge_header(response.headers, "Vary", vary_with_cookie)


def postgres_context(
    pool: AsyncConnectionPool[Any], store: AsyncStore
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: open the pool and the store in the serving process; close after."""

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
    """Keep the app's aiohttp sessions in PostgreSQL: pool, store, storage, middleware.

    Nothing connects before the app starts (`postgres_context`); returns the storage.
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


def _storage(request: web.Request, caller: str) -> PostgresStorage:
    """The request's `PostgresStorage`, or RuntimeError."""
    storage = request.get(STORAGE_KEY)
    if not isinstance(storage, PostgresStorage):
        raise RuntimeError(f"{caller}() needs aiohttp-session's middleware with a PostgresStorage")
    return storage


def _state(storage: PostgresStorage) -> _State | None:
    """The current request's state, if `storage` loaded it."""
    state = _current.get()
    return state if state is not None and state.storage is storage else None


async def renew_token(request: web.Request) -> Session:
    """Have the response save the session under a new token, deleting the old row."""
    storage = _storage(request, "renew_token")
    session = await get_session(request)
    state = _state(storage)
    if state is not None:
        state.renew = True
    session.changed()
    return session


async def login_session(request: web.Request, owner: str) -> Session:
    """`SessionManager.log_in` for the request's session, under a new token."""
    owned: dict[str, Any] = {}
    SessionManager.log_in(owned, owner)
    session = await renew_token(request)
    session.update(owned)
    return session


async def session_owner(request: web.Request) -> str | None:
    """The user the request's session belongs to (set by `login_session`), or None."""
    _storage(request, "session_owner")
    return owner_of(dict(await get_session(request)))


async def user_sessions(request: web.Request) -> list[UserSession]:
    """`SessionManager.sessions` for the request's session's owner."""
    storage = _storage(request, "user_sessions")
    steps = storage.manager.sessions(await session_owner(request), _live_token(storage))
    return [
        dataclasses.replace(s, data={k: v for k, v in s.data.items() if k != CREATED_KEY})
        for s in await arun(steps, storage.store)
    ]


async def logout_everywhere(request: web.Request) -> int:
    """`SessionManager.log_out_everywhere` for the request's session's owner, but this one."""
    storage = _storage(request, "logout_everywhere")
    steps = storage.manager.log_out_everywhere(await session_owner(request), _live_token(storage))
    return await arun(steps, storage.store)


async def revoke(request: web.Request, session_id: str) -> bool:
    """`SessionManager.revoke` for the request's session's owner."""
    storage = _storage(request, "revoke")
    return await arun(
        SessionManager.revoke(await session_owner(request), session_id), storage.store
    )


async def signed_in_within(request: web.Request, within: dt.timedelta | float) -> bool:
    """`SessionManager.signed_in_within` for the request's session."""
    storage = _storage(request, "signed_in_within")
    return storage.manager.signed_in_within(dict(await get_session(request)), within)


def _live_token(storage: PostgresStorage) -> str | None:
    """The token of the request's live session, if it has one."""
    state = _state(storage)
    return state.loaded.token if state is not None and state.loaded.found else None
