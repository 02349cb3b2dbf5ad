"""The session manager: one session's life, written once for every integration.

SCS splits the job in two, the store and the ``SessionManager``; this is the latter,
framework-free and I/O-free like `_core`. It loads a session and decides its save:
what to write, which cookie to set or delete. Each decision is a generator that
yields store calls (`Step`) and is sent their results, as psycopg's generators yield
where they must wait; `run` drives one on a `Store`, `arun` on an `AsyncStore`. An
integration is an adapter: its framework's session object and cookie API in, the
manager's `Outcome` out. See docs/sessions.md for what it guarantees.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from ._core import OwnedSession, Versioned, validate_owner
from .errors import ConcurrentUpdateError
from .integrations._common import (
    OWNER_KEY,
    UserSession,
    create_fresh,
    create_fresh_sync,
    is_token,
    listing,
    owner_of,
    to_timedelta,
)
from .store import Store
from .store_async import AsyncStore

__all__ = [
    "CREATED_KEY",
    "DEFAULT_RENEW_AFTER",
    "Loaded",
    "Outcome",
    "SessionManager",
    "arun",
    "run",
    "secure_by_default",
]

logger = logging.getLogger("sessionstore.manager")

#: The key under which a session's data holds when it was created (Unix seconds):
#: the start of its absolute lifetime, kept across token renewals.
CREATED_KEY = "_session_created"

#: The default share of the idle timeout that must pass before an unchanged
#: session's expiry is moved again.
DEFAULT_RENEW_AFTER = 0.1

#: How many times a save re-reads a row another request changed and merges, before
#: it gives up. Each retry follows a write that succeeded, so only a session
#: written this many times during one save runs out.
MAX_MERGES = 16

T = TypeVar("T")


# The store calls a decision needs; each is sent its result.


@dataclass(frozen=True, slots=True)
class Find:
    """``find_versioned(token)``; sent a `Versioned` or None."""

    token: str


@dataclass(frozen=True, slots=True)
class Update:
    """``update_versioned(...)``; sent whether it wrote."""

    token: str
    data: bytes
    expiry: dt.datetime
    version: int
    owner: str | None


@dataclass(frozen=True, slots=True)
class Touch:
    """``touch(token, expiry)``; sent whether the row was live."""

    token: str
    expiry: dt.datetime


@dataclass(frozen=True, slots=True)
class Create:
    """``create`` under a fresh token; sent that token."""

    data: bytes
    expiry: dt.datetime
    owner: str | None


@dataclass(frozen=True, slots=True)
class Delete:
    """``delete(token)``; sent None."""

    token: str


@dataclass(frozen=True, slots=True)
class SessionsOf:
    """``sessions_of(owner)``; sent the `OwnedSession` list."""

    owner: str


@dataclass(frozen=True, slots=True)
class DeleteOwned:
    """``delete_owned(owner, keep=keep)``; sent how many were deleted."""

    owner: str
    keep: str | None


@dataclass(frozen=True, slots=True)
class Revoke:
    """``revoke(owner, key)``; sent whether it was the owner's."""

    owner: str
    key: str


Step = Find | Update | Touch | Create | Delete | SessionsOf | DeleteOwned | Revoke
#: A decision: yields store calls, is sent their results, returns T.
Steps = Generator[Step, Any, T]


@dataclass(slots=True)
class Loaded:
    """What a request loaded: give `data` to the framework's session object.

    Attributes:
        token: The token the request's cookie held, if it has the shape of one.
        had_cookie: Whether the request sent a session cookie at all.
        data: The session's data, the request's own copy (empty for a new session).
        found: Whether the token named a live session.
        version: The row's version when it was read (for the save).
        expiry: The row's expiry when it was read.
        raw: The stored bytes as read (what "unchanged" is compared with).
    """

    token: str | None
    had_cookie: bool
    data: dict[str, Any] = field(default_factory=dict)
    found: bool = False
    version: int = 0
    expiry: dt.datetime | None = None
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the save decided for the response.

    Attributes:
        token: The token the session is stored under now (None: no session).
        set_cookie: Set the session cookie to `token`, expiring at `expiry`.
        delete_cookie: Delete the session cookie.
        expiry: When the row expires (the cookie must not outlive it).
    """

    token: str | None = None
    set_cookie: bool = False
    delete_cookie: bool = False
    expiry: dt.datetime | None = None

    @property
    def cookie_changed(self) -> bool:
        """Whether the response sets or deletes the cookie (send ``no-cache="Set-Cookie"``)."""
        return self.set_cookie or self.delete_cookie


_NOTHING = Outcome()


class SessionManager:
    """The rules of a session's life, for one integration's settings.

    Args:
        dumps: Serialises a session's data (the framework's serializer).
        loads: Deserialises stored data; returns None (or raises ValueError) for
            data it can't read, which then counts as no session.
        idle_timeout: A session ends this long after its last request (a
            timedelta or seconds).
        lifetime: A session ends this long after it was created, whatever
            happens (None: no absolute lifetime).
        renew_after: The share of `idle_timeout` (0 to 1) that must pass since
            the last renewal before an unchanged session's expiry is moved; 0
            renews on every request.
        clock: The current time, timezone-aware (for tests).

    Raises:
        TypeError: If a duration or `renew_after` has the wrong type.
        ValueError: If a duration is not positive or `renew_after` not in [0, 1].
    """

    def __init__(
        self,
        dumps: Callable[[dict[str, Any]], bytes],
        loads: Callable[[bytes], dict[str, Any] | None],
        *,
        idle_timeout: dt.timedelta | float,
        lifetime: dt.timedelta | float | None = None,
        renew_after: float = DEFAULT_RENEW_AFTER,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.idle_timeout = to_timedelta(idle_timeout, "idle_timeout")
        self.lifetime = None if lifetime is None else to_timedelta(lifetime, "lifetime")
        if isinstance(renew_after, bool) or not isinstance(renew_after, int | float):
            raise TypeError("renew_after must be a number between 0 and 1")
        if not 0 <= renew_after <= 1:
            raise ValueError("renew_after must be between 0 and 1 (a share of idle_timeout)")
        self.renew_after = float(renew_after)
        self._dumps = dumps
        self._loads = loads
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"<SessionManager idle_timeout={self.idle_timeout} lifetime={self.lifetime} "
            f"renew_after={self.renew_after}>"
        )

    def token_of(self, cookie: object) -> str | None:
        """The token a cookie value holds, if it has the shape of one this library issues."""
        if isinstance(cookie, str) and is_token(cookie):
            return cookie
        if cookie is not None:
            logger.debug("ignoring a session cookie that is not a token; new session")
        return None

    def load(self, cookie: str | None) -> Steps[Loaded]:
        """Load the session a request's cookie names.

        Args:
            cookie: The session cookie's value, or None without one.

        Returns:
            A decision that returns what was loaded: a new, empty session if the
            cookie names no live session, its data does not decode, or its lifetime
            is over.
        """
        token = self.token_of(cookie)
        loaded = Loaded(token, cookie is not None)
        if token is None:
            return loaded
        row: Versioned | None = yield Find(token)
        if row is None:
            logger.debug("no live session for the cookie's token; new session")
            return loaded
        data = self._decode(row.data)
        if data is None:
            logger.warning("stored session data does not decode; starting a new session")
            return loaded
        if self._past_lifetime(data):
            # Its row may outlive it (made under a longer lifetime setting): end it.
            yield Delete(token)
            logger.debug("session past its lifetime: deleted; new session")
            return loaded
        loaded.found = True
        loaded.data = data
        loaded.version, loaded.expiry, loaded.raw = row.version, row.expiry, row.data
        return loaded

    def save(
        self, loaded: Loaded, data: Mapping[str, Any], *, renew: bool = False
    ) -> Steps[Outcome]:
        """Decide what a request's end writes, and what becomes of the cookie.

        - emptied: the row and the cookie are deleted;
        - new, or `renew` (a new token asked for, e.g. at login, or the session
          cleared and filled again): saved under a fresh token, the old row deleted;
        - changed: written only if the row is still as it was read; if another
          request wrote it meanwhile, the keys this request set or removed are
          applied to the row as it is now (the other keys keep the other request's
          values) and the write is tried again;
        - unchanged: the expiry is moved only when renewal is due (`renew_after`);
          most requests write nothing;
        - gone since it was read (a logout, a revoke, the expiry): nothing is
          written and the cookie is deleted; a session is never brought back.

        Args:
            loaded: What `load` returned for this request.
            data: The session's data at the end of the request.
            renew: Save under a fresh token and delete the old row.

        Returns:
            A decision that returns the `Outcome`.

        Raises:
            ConcurrentUpdateError: If other requests kept writing the session
                during `MAX_MERGES` attempts.
            TypeError, ValueError: If the data does not serialise or is too large
                for the store (raised before anything is written).
        """
        data = dict(data)
        if not data.keys() - {CREATED_KEY}:  # emptied, or never filled
            if loaded.found and loaded.token is not None:
                yield Delete(loaded.token)
                logger.debug("session emptied: row deleted")
            # A cookie that names no live session is deleted, never left to linger.
            return Outcome(delete_cookie=loaded.had_cookie)
        now = self._clock()
        if renew or not loaded.found:
            return (yield from self._create(loaded, data, now))
        raw = self._dumps(data)
        # Equal bytes, or equal data stored in another layout (an older serializer
        # setting): either way the request changed nothing.
        if raw == loaded.raw or data == self._decode(loaded.raw):
            return (yield from self._renew(loaded, data, now))
        return (yield from self._update(loaded, data, raw, now))

    def _create(self, loaded: Loaded, data: dict[str, Any], now: dt.datetime) -> Steps[Outcome]:
        """Save under a fresh token; delete the old row first."""
        if not loaded.found or not isinstance(data.get(CREATED_KEY), int | float):
            data[CREATED_KEY] = now.timestamp()
        payload = self._dumps(data)  # before the delete: bad data loses nothing
        if loaded.token is not None and loaded.found:
            # First: if the create then fails, the old token is dead all the same.
            yield Delete(loaded.token)
            logger.debug("new token for the session: old row deleted")
        expiry = self._expiry(data, now)
        token: str = yield Create(payload, expiry, owner_of(data))
        return Outcome(token, set_cookie=True, expiry=expiry)

    def _renew(self, loaded: Loaded, data: dict[str, Any], now: dt.datetime) -> Steps[Outcome]:
        """An unchanged session: move its expiry if renewal is due, else do nothing."""
        assert loaded.token is not None
        assert loaded.expiry is not None
        expiry = self._expiry(data, now)
        remaining = loaded.expiry - now
        if remaining > self.idle_timeout * (1 - self.renew_after) or expiry <= loaded.expiry:
            return Outcome(loaded.token, expiry=loaded.expiry)
        if not (yield Touch(loaded.token, expiry)):
            return self._gone()
        return Outcome(loaded.token, set_cookie=True, expiry=expiry)

    def _update(
        self, loaded: Loaded, data: dict[str, Any], raw: bytes, now: dt.datetime
    ) -> Steps[Outcome]:
        """A changed session: write it if unchanged since read, else merge and retry."""
        assert loaded.token is not None
        base = self._decode(loaded.raw) or {}
        version = loaded.version
        expiry = self._expiry(data, now)
        for _ in range(MAX_MERGES):
            if (yield Update(loaded.token, raw, expiry, version, owner_of(data))):
                return Outcome(loaded.token, set_cookie=True, expiry=expiry)
            row: Versioned | None = yield Find(loaded.token)
            if row is None:
                return self._gone()
            theirs = self._decode(row.data)
            if theirs is None:
                return self._gone()
            data = merge(base, data, theirs)
            raw, version = self._dumps(data), row.version
            logger.debug("session written by another request meanwhile: merged, trying again")
        raise ConcurrentUpdateError(
            f"the session was written by other requests {MAX_MERGES} times during one save"
        )

    @staticmethod
    def _gone() -> Outcome:
        """The session was deleted or expired since it was read: it stays gone."""
        logger.debug("session gone since it was read: not saved, cookie deleted")
        return Outcome(delete_cookie=True)

    def _expiry(self, data: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
        """The idle deadline, never past the lifetime."""
        expiry = now + self.idle_timeout
        created = data.get(CREATED_KEY)
        if self.lifetime is not None and isinstance(created, int | float):
            end = dt.datetime.fromtimestamp(created, dt.UTC) + self.lifetime
            expiry = min(expiry, end)
        return expiry

    def _past_lifetime(self, data: Mapping[str, Any]) -> bool:
        created = data.get(CREATED_KEY)
        if self.lifetime is None or not isinstance(created, int | float):
            return False
        return self._clock().timestamp() >= created + self.lifetime.total_seconds()

    def _decode(self, raw: bytes) -> dict[str, Any] | None:
        """Decode stored data; None if it is not a mapping."""
        try:
            data = self._loads(raw)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    # Sessions per user: the store's owner column (``owners=True``).

    @staticmethod
    def log_in(data: dict[str, Any], owner: str) -> None:
        """Make the session `owner`'s; the caller saves it under a fresh token (``renew``).

        Raises:
            TypeError: If `owner` is not a str.
            ValueError: If `owner` is empty, too long, or holds NUL or lone surrogates.
        """
        data[OWNER_KEY] = validate_owner(owner)

    def sessions(self, owner: str, token: str | None) -> Steps[list[UserSession]]:
        """List `owner`'s live sessions, marking the one of `token` as current."""
        owned: list[OwnedSession] = yield SessionsOf(owner)
        return listing(owned, token, lambda raw: self._decode(raw) or {})

    @staticmethod
    def log_out_everywhere(owner: str, keep: str | None) -> Steps[int]:
        """End every session of `owner` but the one of `keep`; return how many ended."""
        count: int = yield DeleteOwned(owner, keep)
        return count

    @staticmethod
    def revoke(owner: str, key: str) -> Steps[bool]:
        """End one of `owner`'s sessions by its listed key; whether it was theirs."""
        revoked: bool = yield Revoke(owner, key)
        return revoked


#: Hosts of local development, where a cookie can't be ``Secure`` (plain HTTP).
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def secure_by_default(host: str | None) -> bool:
    """Whether a cookie is ``Secure`` when the application has not said: yes, but locally.

    Args:
        host: The request's host (a ``Host`` header value, with or without port).

    Returns:
        False for localhost, loopback addresses and ``*.localhost``; True otherwise.
    """
    if not host:
        return True
    name = host.lower()
    if name.startswith("["):  # [v6]:port
        name = name.split("]", 1)[0] + "]"
    elif name.count(":") == 1:  # name:port
        name = name.split(":", 1)[0]
    return not (name in _LOCAL_HOSTS or name.endswith(".localhost"))


def merge(
    base: Mapping[str, Any], mine: Mapping[str, Any], theirs: Mapping[str, Any]
) -> dict[str, Any]:
    """Apply what this request changed (from `base` to `mine`) on top of `theirs`.

    Keys the request set or removed take its values; every other key keeps the
    value another request wrote meanwhile.
    """
    merged = copy.copy(dict(theirs))
    for key, value in mine.items():
        if key not in base or base[key] != value:
            merged[key] = value
    for key in base:
        if key not in mine:
            merged.pop(key, None)
    return merged


def run(steps: Steps[T], store: Store) -> T:
    """Run a decision's store calls on a `Store` and return its result.

    Raises:
        sessionstore.DatabaseError: If the store failed.
    """
    with contextlib.closing(steps):
        result: Any = None
        while True:
            try:
                step = steps.send(result)
            except StopIteration as done:
                return cast(T, done.value)
            result = _call(step, store)


async def arun(steps: Steps[T], store: AsyncStore) -> T:
    """Run a decision's store calls on an `AsyncStore` and return its result.

    Raises:
        sessionstore.DatabaseError: If the store failed.
    """
    with contextlib.closing(steps):
        result: Any = None
        while True:
            try:
                step = steps.send(result)
            except StopIteration as done:
                return cast(T, done.value)
            result = await _acall(step, store)


def _call(step: Step, store: Store) -> Any:
    """One store call, on a `Store` (the twin of `_acall`)."""
    match _owned(step, store.owners):
        case Find(token):
            return store.find_versioned(token)
        case Update(token, data, expiry, version, owner):
            return store.update_versioned(token, data, expiry, version, owner=owner)
        case Touch(token, expiry):
            return store.touch(token, expiry)
        case Create(data, expiry, owner):
            return create_fresh_sync(lambda token: store.create(token, data, expiry, owner=owner))
        case Delete(token):
            return store.delete(token)
        case SessionsOf(owner):
            return store.sessions_of(owner)
        case DeleteOwned(owner, keep):
            return store.delete_owned(owner, keep=keep)
        case Revoke(owner, key):
            return store.revoke(owner, key)


def _owned(step: Step, owners: bool) -> Step:
    """The step as a store without the owner column takes it (no owner to write)."""
    if not owners and isinstance(step, Update | Create) and step.owner is not None:
        return dataclasses.replace(step, owner=None)
    return step


async def _acall(step: Step, store: AsyncStore) -> Any:
    """One store call, on an `AsyncStore` (the twin of `_call`)."""
    match _owned(step, store.owners):
        case Find(token):
            return await store.find_versioned(token)
        case Update(token, data, expiry, version, owner):
            return await store.update_versioned(token, data, expiry, version, owner=owner)
        case Touch(token, expiry):
            return await store.touch(token, expiry)
        case Create(data, expiry, owner):
            return await create_fresh(lambda token: store.create(token, data, expiry, owner=owner))
        case Delete(token):
            return await store.delete(token)
        case SessionsOf(owner):
            return await store.sessions_of(owner)
        case DeleteOwned(owner, keep):
            return await store.delete_owned(owner, keep=keep)
        case Revoke(owner, key):
            return await store.revoke(owner, key)
