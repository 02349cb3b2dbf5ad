"""What the integrations share: tokens, owners, listings, headers, the missing extra."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._core import FRESH_TOKEN_ATTEMPTS, hash_token, new_token

#: Tokens as SCS issues them: 32 random bytes in url-safe base64 without padding.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")

#: The server-side idle timeout of a session whose cookie lasts as long as the browser
#: runs: the server never learns when the browser closes.
DEFAULT_SESSION_ONLY_TTL = dt.timedelta(hours=24)

#: The key under which a session's data holds its owner (the user id given at login).
#: Every save passes it to the store, so a row is owned whichever request writes it,
#: and the "log out everywhere" helpers know whose sessions to end without asking.
OWNER_KEY = "_session_owner"

logger = logging.getLogger("sessionstore.integrations")


@dataclass(frozen=True)
class UserSession:
    """One of a user's live sessions, as a "where am I signed in" page lists it.

    It holds no token: `id` names the session for `revoke` and nothing else.

    Attributes:
        id: An opaque id, derived from the stored key by a one-way hash: never a
            usable token, whatever the store's ``hash_tokens``.
        current: Whether it is the session of the request that asked.
        created: When the session began (kept across token renewals), if known.
        last_seen: When it was last used, to within the renewal interval
            (``renew_after`` of the idle timeout): no write per request records it.
        expiry: When it expires, timezone-aware, in UTC.
        signed_in: When its user last signed in, if known.
        ip: The client's IP address when it got its token (``record_devices``).
        user_agent: The client's user agent then (``record_devices``).
        data: The session's data, decoded; empty if it does not decode.
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
    """Whether a stored key is `token`'s, with or without ``hash_tokens``.

    Both forms are checked, so no knowledge of the store's setting is needed: a raw
    token equal to the hash of another would be a SHA-256 preimage.
    """
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


async def create_fresh(create: Callable[[str], Awaitable[bool]]) -> str:
    """Save a new session under a fresh token with `create` (False: taken); the token.

    `create` never overwrites a live session, so a token that happens to be taken
    leaves the other session alone and is replaced by another.

    Raises:
        RuntimeError: If every attempt collided (a broken random source).
    """
    for _ in range(FRESH_TOKEN_ATTEMPTS):
        token = new_token()
        if await create(token):
            return token
        logger.warning("a freshly generated session token was already taken; trying another")
    raise RuntimeError(f"no free session token after {FRESH_TOKEN_ATTEMPTS} attempts")


def create_fresh_sync(create: Callable[[str], bool]) -> str:
    """`create_fresh` for a synchronous `create`."""
    for _ in range(FRESH_TOKEN_ATTEMPTS):
        token = new_token()
        if create(token):
            return token
        logger.warning("a freshly generated session token was already taken; trying another")
    raise RuntimeError(f"no free session token after {FRESH_TOKEN_ATTEMPTS} attempts")


def is_token(value: object) -> bool:
    """Whether a cookie value has the shape of a token this library issues.

    Anything else (empty, tampered, another library's ID) is never looked up: it can
    name no session, and the check keeps odd input away from the database.
    """
    return isinstance(value, str) and _TOKEN_RE.fullmatch(value) is not None


def to_timedelta(value: dt.timedelta | float, name: str) -> dt.timedelta:
    """A positive duration given in seconds or as a timedelta.

    Raises:
        TypeError: If it is neither a number nor a timedelta.
        ValueError: If it is not positive.
    """
    if isinstance(value, bool) or not isinstance(value, dt.timedelta | int | float):
        raise TypeError(f"{name} must be a timedelta or a number of seconds")
    delta = value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)
    if delta <= dt.timedelta(0):
        raise ValueError(f"{name} must be positive")
    return delta


def missing_extra(module: str, extra: str, exc: ImportError) -> ImportError:
    """The ImportError raised when an integration's extra is not installed: what to install."""
    missing = exc.name or "a dependency"
    error = ImportError(
        f'{module} needs {missing}, which is not installed: pip install "sessionstore[{extra}]"',
        name=exc.name,
    )
    error.__cause__ = exc
    return error


#: What SCS adds to the Cache-Control of a response that sets or clears the session
#: cookie: a shared cache may keep the page, never the cookie.
NO_CACHE_SET_COOKIE = 'no-cache="Set-Cookie"'


def vary_with_cookie(values: list[str]) -> str | None:
    """The one ``Vary`` value with ``Cookie`` merged into `values`; None if it is there.

    `values` may be several headers, each a comma-separated list; ``*`` covers it.
    """
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if any(name == "*" or name.lower() == "cookie" for name in names):
        return None
    return ", ".join([*names, "Cookie"])


def cache_control_with_no_cache_set_cookie(values: list[str]) -> str | None:
    """The one ``Cache-Control`` value with ``no-cache="Set-Cookie"`` merged in.

    None when nothing changes: the directive, or a plain ``no-cache`` or ``no-store``
    (which covers it), is there already.
    """
    directives = [d.strip() for value in values for d in value.split(",") if d.strip()]
    for directive in directives:
        name, _, argument = directive.partition("=")
        name = name.strip().lower()
        if name == "no-store" or (
            name == "no-cache" and argument.strip('" ').lower() in ("", "set-cookie")
        ):
            return None
    return ", ".join([*directives, NO_CACHE_SET_COOKIE])
