"""The session manager: one session's life, written once for every integration.

Framework-free and I/O-free like `_core`: each decision is a generator that yields
store calls (`Call`) and is sent their results; `run` drives one on a `Store`, `arun`
on an `AsyncStore`. See docs/sessions.md.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from ._core import (
    FRESH_TOKEN_ATTEMPTS,
    OwnedSession,
    Versioned,
    hash_token,
    new_token,
    validate_owner,
)
from .errors import ConcurrentUpdateError
from .store import Store
from .store_async import AsyncStore

__all__ = [
    "CREATED_KEY",
    "DEFAULT_RENEW_AFTER",
    "DEFAULT_ROTATE_GRACE",
    "Device",
    "Loaded",
    "Outcome",
    "SessionManager",
    "UserSession",
    "arun",
    "run",
    "secure_by_default",
]

#: Tokens as SCS issues them: 32 random bytes in url-safe base64 without padding.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")

#: Where a session's data keeps its owner (the user id given at login): every save
#: passes it to the store, so a row is owned whichever request writes it.
OWNER_KEY = "_session_owner"


@dataclass(frozen=True)
class UserSession:
    """One of a user's live sessions, as "where am I signed in" lists it (docs/users.md).

    It holds no token; `data` is the session's, decoded (empty if it does not decode).
    """

    id: str
    current: bool
    created: dt.datetime | None
    last_seen: dt.datetime
    expiry: dt.datetime
    signed_in: dt.datetime | None = None
    ip: str | None = None
    user_agent: str | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def is_current(key: str, token: str | None) -> bool:
    """Whether a stored key is `token`'s, with or without ``hash_tokens``."""
    # Both forms, whatever the store's setting: a raw token equal to the hash of
    # another would be a SHA-256 preimage.
    return token is not None and key in (token, hash_token(token))


def session_id(key: str) -> str:
    """The listed id of the session stored under `key`: 128 bits of a one-way hash."""
    digest = hashlib.sha256(b"sessionstore session id\0" + key.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def owner_of(data: object) -> str | None:
    """The owner a session's decoded data holds, or None for an anonymous session."""
    if isinstance(data, dict):
        owner = data.get(OWNER_KEY)
        if isinstance(owner, str) and owner:
            return owner
    return None


def is_token(value: object) -> bool:
    """Whether a cookie value has the shape of a token this library issues (else no lookup)."""
    return isinstance(value, str) and _TOKEN_RE.fullmatch(value) is not None


def to_timedelta(value: dt.timedelta | float, name: str) -> dt.timedelta:
    """A positive duration given in seconds or as a timedelta; TypeError, ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, dt.timedelta | int | float):
        raise TypeError(f"{name} must be a timedelta or a number of seconds")
    delta = value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)
    if delta <= dt.timedelta(0):
        raise ValueError(f"{name} must be positive")
    return delta


logger = logging.getLogger("sessionstore.manager")

#: Where a session's data keeps when it was created (Unix seconds): the start of its
#: absolute lifetime, kept across token renewals.
CREATED_KEY = "_session_created"

#: When its user last signed in (Unix seconds), for `signed_in_within`.
SIGNED_IN_KEY = "_session_signed_in"

#: When its token was last rotated.
ROTATED_KEY = "_session_rotated"

#: Set on the old token's row while it is rotated: its requests in flight are served,
#: but their saves write nothing (the session lives on under the new token).
MOVED_KEY = "_session_moved"

#: The device it was signed in from (``record_devices``): ``{"ip": ..., "user_agent": ...}``.
DEVICE_KEY = "_session_device"

#: Keys the manager keeps for itself: a session holding only these is empty (the
#: owner and the sign-in time are not among them: they mean someone is logged in).
_BOOKKEEPING = frozenset({CREATED_KEY, ROTATED_KEY, MOVED_KEY, DEVICE_KEY})

#: The longest user agent kept; longer ones are cut (they are free text from clients).
MAX_USER_AGENT = 256

#: How long an old token keeps working after a timed rotation, by default: long
#: enough for the requests a browser has in flight when the new cookie arrives.
DEFAULT_ROTATE_GRACE = dt.timedelta(seconds=30)

#: The default share of the idle timeout that must pass before an unchanged
#: session's expiry is moved again.
DEFAULT_RENEW_AFTER = 0.1

#: How many times a save re-reads and merges a row other requests changed before it
#: gives up; each retry follows another request's successful write.
MAX_MERGES = 16

T = TypeVar("T")


class Call:
    """A store call a decision yields, ``store.<method>(*args, **kwargs)``; sent its result."""

    __slots__ = ("args", "kwargs", "method")

    def __init__(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.method, self.args, self.kwargs = method, args, kwargs


#: A decision: yields store calls, is sent their results, returns T.
Steps = Generator[Call, Any, T]


@dataclass(slots=True)
class Loaded:
    """What a request loaded: give `data`, the request's own copy, to its session object.

    `token` is the cookie's, if it has the shape of one, and `found` whether it named
    a live session; `version`, `expiry` and `raw` are the row as read; `moved` means a
    rotation moved the session while the request was in flight: its save writes nothing.
    """

    token: str | None
    had_cookie: bool
    data: dict[str, Any] = field(default_factory=dict)
    found: bool = False
    version: int = 0
    expiry: dt.datetime | None = None
    raw: bytes = b""
    moved: bool = False


@dataclass(frozen=True, slots=True)
class Device:
    """The client a request came from (IP address and ``User-Agent``), for `record_devices`."""

    ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the save decided for the response.

    `token` is what the session is stored under now (None: no session); `set_cookie`
    sets the cookie to it, expiring at `expiry` (the row's, which the cookie must not
    outlive); `delete_cookie` deletes the cookie.
    """

    token: str | None = None
    set_cookie: bool = False
    delete_cookie: bool = False
    expiry: dt.datetime | None = None

    @property
    def cookie_changed(self) -> bool:
        """Whether the response sets or deletes the cookie (send ``no-cache="Set-Cookie"``)."""
        return self.set_cookie or self.delete_cookie

    @property
    def max_age(self) -> int | None:
        """The cookie's ``Max-Age``: the whole seconds the row has left, rounded down."""
        if self.expiry is None:
            return None
        return max(0, int((self.expiry - dt.datetime.now(dt.UTC)).total_seconds()))


class SessionManager:
    """The rules of a session's life (docs/sessions.md), for one integration's settings.

    `loads` returns None (or raises ValueError) for data it can't read: no session.
    A session ends `idle_timeout` after its last renewal and `lifetime` (None: never)
    after its creation; `renew_after` is the share of `idle_timeout` that must pass
    before an unchanged session's expiry moves again (0: every request). Its token
    rotates every `rotate_every` (None: never), the old one working `rotate_grace`
    more. `record_devices` keeps the client's IP address and user agent (personal
    data); `clock` is the time, timezone-aware, for tests.

    Raises:
        TypeError, ValueError: If a setting has the wrong type or is out of range
            (`renew_after` in [0, 1], `rotate_grace` shorter than `idle_timeout`).
    """

    def __init__(
        self,
        dumps: Callable[[dict[str, Any]], bytes],
        loads: Callable[[bytes], dict[str, Any] | None],
        *,
        idle_timeout: dt.timedelta | float,
        lifetime: dt.timedelta | float | None = None,
        renew_after: float = DEFAULT_RENEW_AFTER,
        rotate_every: dt.timedelta | float | None = None,
        rotate_grace: dt.timedelta | float = DEFAULT_ROTATE_GRACE,
        record_devices: bool = False,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.idle_timeout = to_timedelta(idle_timeout, "idle_timeout")
        self.lifetime = None if lifetime is None else to_timedelta(lifetime, "lifetime")
        if isinstance(renew_after, bool) or not isinstance(renew_after, int | float):
            raise TypeError("renew_after must be a number between 0 and 1")
        if not 0 <= renew_after <= 1:
            raise ValueError("renew_after must be between 0 and 1 (a share of idle_timeout)")
        self.renew_after = float(renew_after)
        self.rotate_every = (
            None if rotate_every is None else to_timedelta(rotate_every, "rotate_every")
        )
        self.rotate_grace = to_timedelta(rotate_grace, "rotate_grace")
        if self.rotate_every is not None and self.rotate_grace >= self.idle_timeout:
            raise ValueError("rotate_grace must be shorter than idle_timeout")
        self.record_devices = bool(record_devices)
        self._dumps = dumps
        self._loads = loads
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"<SessionManager idle_timeout={self.idle_timeout} lifetime={self.lifetime} "
            f"renew_after={self.renew_after} rotate_every={self.rotate_every}>"
        )

    def token_of(self, cookie: object) -> str | None:
        """The token a cookie value holds, if it has the shape of one this library issues."""
        if isinstance(cookie, str) and is_token(cookie):
            return cookie
        if cookie is not None:
            logger.debug("ignoring a session cookie that is not a token; new session")
        return None

    def load(self, cookie: str | None) -> Steps[Loaded]:
        """Load the session a request's cookie (None: no cookie) names.

        A new, empty session if the cookie names no live session, its data does not
        decode, or its lifetime is over.
        """
        token = self.token_of(cookie)
        loaded = Loaded(token, cookie is not None)
        if token is None:
            return loaded
        row: Versioned | None = yield Call("find_versioned", token)
        if row is None:
            logger.debug("no live session for the cookie's token; new session")
            return loaded
        data = self._decode(row.data)
        if data is None:
            logger.warning("stored session data does not decode; starting a new session")
            return loaded
        now = self._clock()
        if self._expiry(data, now) <= now:
            # Its row may outlive it (made under a longer lifetime setting): end it.
            yield Call("delete", token)
            logger.debug("session past its lifetime: deleted; new session")
            return loaded
        loaded.found = True
        loaded.data = data
        loaded.version, loaded.expiry, loaded.raw = row.version, row.expiry, row.data
        loaded.moved = bool(data.get(MOVED_KEY))
        return loaded

    def save(
        self,
        loaded: Loaded,
        data: Mapping[str, Any],
        *,
        renew: bool = False,
        device: Device | None = None,
    ) -> Steps[Outcome]:
        """Decide what the request of `loaded` writes for `data`, and what becomes of the cookie.

        `renew` (login) saves under a fresh token; `device` is kept with `record_devices`.

        Raises:
            ConcurrentUpdateError: If other requests kept writing the session
                during `MAX_MERGES` attempts.
            TypeError, ValueError: If the data does not serialise or is too large
                for the store (raised before anything is written).
        """
        if loaded.moved:
            logger.debug("session moved to a new token meanwhile: this save writes nothing")
            return Outcome(loaded.token, expiry=loaded.expiry)
        data = dict(data)
        if not data.keys() - _BOOKKEEPING:  # emptied, or never filled
            if loaded.found and loaded.token is not None:
                yield Call("delete", loaded.token)
                logger.debug("session emptied: row deleted")
            # A cookie that names no live session is deleted, never left to linger.
            return Outcome(delete_cookie=loaded.had_cookie)
        now = self._clock()
        if renew or not loaded.found:
            return (yield from self._create(loaded, data, now, device))
        if self._rotation_due(data, now):
            return (yield from self._rotate(loaded, data, now))
        raw = self._dumps(data)
        # Equal bytes, or equal data stored in another layout (an older serializer
        # setting): either way the request changed nothing.
        if raw == loaded.raw or data == self._decode(loaded.raw):
            return (yield from self._renew(loaded, data, now))
        expiry = self._expiry(data, now)
        written = yield from self._write(loaded, data, raw, expiry)
        if isinstance(written, Outcome):
            return written
        return Outcome(loaded.token, set_cookie=True, expiry=expiry)

    def _create(
        self, loaded: Loaded, data: dict[str, Any], now: dt.datetime, device: Device | None
    ) -> Steps[Outcome]:
        """Save under a fresh token; delete the old row first."""
        if not loaded.found or not isinstance(data.get(CREATED_KEY), int | float):
            data[CREATED_KEY] = now.timestamp()
        if self.rotate_every is not None:
            data[ROTATED_KEY] = now.timestamp()
        if self.record_devices and device is not None:
            agent = None if device.user_agent is None else device.user_agent[:MAX_USER_AGENT]
            data[DEVICE_KEY] = {"ip": device.ip, "user_agent": agent}
        payload = self._dumps(data)  # before the delete: bad data loses nothing
        if loaded.token is not None and loaded.found:
            # First: if the create then fails, the old token is dead all the same.
            yield Call("delete", loaded.token)
            logger.debug("new token for the session: old row deleted")
        expiry = self._expiry(data, now)
        # `create` never overwrites a live session: a taken token is replaced by another.
        for _ in range(FRESH_TOKEN_ATTEMPTS):
            token = new_token()
            if (yield Call("create", token, payload, expiry, owner=owner_of(data))):
                return Outcome(token, set_cookie=True, expiry=expiry)
            logger.warning("a freshly generated session token was already taken; trying another")
        raise RuntimeError(f"no free session token after {FRESH_TOKEN_ATTEMPTS} attempts")

    def _renew(self, loaded: Loaded, data: dict[str, Any], now: dt.datetime) -> Steps[Outcome]:
        """An unchanged session: move its expiry if renewal is due, else do nothing."""
        assert loaded.token is not None
        assert loaded.expiry is not None
        expiry = self._expiry(data, now)
        remaining = loaded.expiry - now
        if remaining > self.idle_timeout * (1 - self.renew_after) or expiry <= loaded.expiry:
            return Outcome(loaded.token, expiry=loaded.expiry)
        if self.rotate_every is not None:
            # A touch checks no version, so it would give back the full idle timeout
            # to an old token that a rotation has just cut to its grace.
            args = (loaded.token, loaded.raw, expiry, loaded.version)
            if (yield Call("update_versioned", *args, owner=owner_of(data))):
                return Outcome(loaded.token, set_cookie=True, expiry=expiry)
            # Written meanwhile (which renewed it), moved, or gone.
            row: Versioned | None = yield Call("find_versioned", loaded.token)
            return self._gone() if row is None else Outcome(loaded.token, expiry=row.expiry)
        if not (yield Call("touch", loaded.token, expiry)):
            return self._gone()
        return Outcome(loaded.token, set_cookie=True, expiry=expiry)

    def _write(
        self, loaded: Loaded, data: dict[str, Any], raw: bytes, expiry: dt.datetime
    ) -> Steps[dict[str, Any] | Outcome]:
        """Write over the row as read, else merge and retry; the data, or the `Outcome`."""
        assert loaded.token is not None
        base: dict[str, Any] | None = None  # decoded on the first conflict only
        version = loaded.version
        for _ in range(MAX_MERGES):
            args = (loaded.token, raw, expiry, version)
            if (yield Call("update_versioned", *args, owner=owner_of(data))):
                return data
            row: Versioned | None = yield Call("find_versioned", loaded.token)
            theirs = None if row is None else self._decode(row.data)
            if row is None or theirs is None:
                return self._gone()
            if theirs.get(MOVED_KEY):
                logger.debug("session moved to a new token meanwhile: this save writes nothing")
                return Outcome(loaded.token, expiry=row.expiry)
            if base is None:
                base = self._decode(loaded.raw) or {}
            data = merge(base, data, theirs)
            raw, version = self._dumps(data), row.version
            logger.debug("session written by another request meanwhile: merged, trying again")
        raise ConcurrentUpdateError(
            f"the session was written by other requests {MAX_MERGES} times during one save"
        )

    def _rotation_due(self, data: Mapping[str, Any], now: dt.datetime) -> bool:
        if self.rotate_every is None:
            return False
        since = data.get(ROTATED_KEY, data.get(CREATED_KEY))
        if not isinstance(since, int | float):
            return True
        # A session that ends within the grace is not worth a new token.
        due = now.timestamp() - since >= self.rotate_every.total_seconds()
        return due and self._expiry(data, now) - now > self.rotate_grace

    def _rotate(self, loaded: Loaded, data: dict[str, Any], now: dt.datetime) -> Steps[Outcome]:
        """Move the session to a new token; the old one works for `rotate_grace` more."""
        assert loaded.token is not None
        # The mark keeps the old token's requests in flight from writing (docs/sessions.md).
        data[ROTATED_KEY] = now.timestamp()
        expiry = self._expiry(data, now)
        marked = {**data, MOVED_KEY: True}
        written = yield from self._write(loaded, marked, self._dumps(marked), expiry)
        if isinstance(written, Outcome):
            return written
        del written[MOVED_KEY]
        payload, owner = self._dumps(written), owner_of(written)
        token: str | None = yield Call("rotate", loaded.token, grace=self.rotate_grace)
        if token is None:  # it expired meanwhile
            yield Call("update", loaded.token, payload, expiry, owner=owner)
            return Outcome(loaded.token, set_cookie=True, expiry=expiry)
        yield Call("update", token, payload, expiry, owner=owner)
        logger.debug("session token rotated")
        return Outcome(token, set_cookie=True, expiry=expiry)

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

    def _decode(self, raw: bytes) -> dict[str, Any] | None:
        """Decode stored data; None if it is not a mapping."""
        try:
            data = self._loads(raw)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    # Sessions per user (docs/users.md): the store's owner column (``owners=True``).
    # The integrations' per-user helpers apply these to the request's session; None
    # as the owner means nobody is logged in.

    @staticmethod
    def log_in(data: dict[str, Any], owner: str) -> None:
        """Make the session `owner`'s (the user id, as text), signed in now; save it with ``renew``.

        Raises:
            TypeError, ValueError: If `owner` is not a str, or empty, too long, or
                holds NUL or lone surrogates.
        """
        data[OWNER_KEY] = validate_owner(owner)
        data[SIGNED_IN_KEY] = time.time()

    def signed_in_within(self, data: Mapping[str, Any], within: dt.timedelta | float) -> bool:
        """Whether the session's user signed in (`log_in`) no longer than `within` ago.

        Raises:
            TypeError, ValueError: If `within` is not a positive timedelta or seconds.
        """
        limit = to_timedelta(within, "within").total_seconds()
        at = data.get(SIGNED_IN_KEY)
        if not isinstance(at, int | float) or isinstance(at, bool):
            return False
        return self._clock().timestamp() - at <= limit

    def sessions(self, owner: str | None, token: str | None) -> Steps[list[UserSession]]:
        """List `owner`'s live sessions, soonest to expire first, `token`'s marked current.

        None for nobody. No token is in them: a `UserSession.id` names one for `revoke`.

        Raises:
            sessionstore.OwnersNotEnabledError: If the store lacks ``owners=True``.
        """
        if owner is None:
            return []
        owned: list[OwnedSession] = yield Call("sessions_of", owner)
        now = self._clock()
        listed = []
        for each in owned:
            data = self._decode(each.data) or {}
            if not data.get(MOVED_KEY):  # an old token in its grace: the new one is listed
                listed.append(self._listed(each, data, token, now))
        return listed

    def _listed(
        self, owned: OwnedSession, data: dict[str, Any], token: str | None, now: dt.datetime
    ) -> UserSession:
        """One listed session; no token in it."""
        created = _moment(data.get(CREATED_KEY))
        # The last renewal set the expiry to its time plus the idle timeout.
        seen = min(owned.expiry - self.idle_timeout, now)
        if created is not None:
            seen = max(seen, created)
        device = data.get(DEVICE_KEY)
        device = device if isinstance(device, dict) else {}
        ip, agent = device.get("ip"), device.get("user_agent")
        return UserSession(
            id=session_id(owned.key),
            current=is_current(owned.key, token),
            created=created,
            last_seen=seen,
            expiry=owned.expiry,
            signed_in=_moment(data.get(SIGNED_IN_KEY)),
            ip=ip if isinstance(ip, str) else None,
            user_agent=agent if isinstance(agent, str) else None,
            data=data,
        )

    @staticmethod
    def log_out_everywhere(owner: str | None, keep: str | None) -> Steps[int]:
        """End every session of `owner` but the one of `keep`; how many ended (0 for nobody)."""
        if owner is None:
            return 0
        count: int = yield Call("delete_owned", owner, keep=keep)
        return count

    @staticmethod
    def revoke(owner: str | None, session: str) -> Steps[bool]:
        """End one of `owner`'s sessions by its listed `UserSession.id`; whether it was theirs.

        False for nobody, another user's id, a token or a stale id.

        Raises:
            TypeError: If `session` is not a str.
        """
        if owner is None:
            return False
        if not isinstance(session, str):
            raise TypeError(
                f"session must be a listed session id (str), not {type(session).__name__}"
            )
        owned: list[OwnedSession] = yield Call("sessions_of", owner)
        for each in owned:
            if hmac.compare_digest(session_id(each.key), session):
                revoked: bool = yield Call("revoke", owner, each.key)
                return revoked
        return False


def _moment(value: object) -> dt.datetime | None:
    """A Unix time kept in session data as an aware datetime; None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC)


#: Hosts of local development, where a cookie can't be ``Secure`` (plain HTTP).
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def secure_by_default(host: str | None) -> bool:
    """Whether a cookie is ``Secure`` when the app has not said: not for a local `host` header."""
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
    """Apply what this request changed (from `base` to `mine`) on top of `theirs`, key by key."""
    merged = copy.copy(dict(theirs))
    for key, value in mine.items():
        if key not in base or base[key] != value:
            merged[key] = value
    for key in base:
        if key not in mine:
            merged.pop(key, None)
    return merged


def run(steps: Steps[T], store: Store) -> T:
    """Run a decision's store calls on a `Store` and return its result."""
    with contextlib.closing(steps):
        result: Any = None
        while True:
            try:
                step = steps.send(result)
            except StopIteration as done:
                return cast(T, done.value)
            result = _call(step, store)


async def arun(steps: Steps[T], store: AsyncStore) -> T:
    """`run` on an `AsyncStore`."""
    with contextlib.closing(steps):
        result: Any = None
        while True:
            try:
                step = steps.send(result)
            except StopIteration as done:
                return cast(T, done.value)
            result = await _call(step, store)


def _call(call: Call, store: Store | AsyncStore) -> Any:
    """The store call: its result on a `Store`, its awaitable on an `AsyncStore`."""
    kwargs = call.kwargs
    if not store.owners and "owner" in kwargs:
        kwargs = {**kwargs, "owner": None}  # no owner column to write
    return getattr(store, call.method)(*call.args, **kwargs)
