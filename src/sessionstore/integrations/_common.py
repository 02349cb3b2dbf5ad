"""What the integrations share: tokens, the session's owner, listings, the missing-extra error."""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._core import OwnedSession, hash_token

#: Tokens as SCS issues them: 32 random bytes in url-safe base64 without padding.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")

#: The server-side lifetime of a session whose cookie lasts as long as the browser
#: runs: the server never learns when the browser closes.
DEFAULT_SESSION_ONLY_TTL = dt.timedelta(hours=24)

#: The key under which a session's data holds its owner (the user id given at login).
#: Every save passes it to the store, so a row is owned whichever request writes it,
#: and the "log out everywhere" helpers know whose sessions to end without asking.
OWNER_KEY = "_session_owner"

#: How many fresh tokens to try before giving up. A collision of two 256-bit random
#: tokens never happens in practice; a second one in a row means a broken RNG.
_CREATE_ATTEMPTS = 3

logger = logging.getLogger("sessionstore.integrations")


@dataclass(frozen=True)
class UserSession:
    """One of a user's live sessions, as the "where am I logged in" helpers list them.

    Attributes:
        key: The stored key (`OwnedSession.key`): the token itself, or its hash on a
            store with ``hash_tokens=True``. It is what the store's ``revoke`` takes.
            Show users only a prefix: without ``hash_tokens`` the whole key is a
            working token.
        expiry: When it expires, timezone-aware, in UTC.
        current: Whether it is the session of the request that asked.
        data: The session's data, decoded; empty if it does not decode.
    """

    key: str
    expiry: dt.datetime
    current: bool
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def is_current(key: str, token: str | None) -> bool:
    """Tell whether a stored key is that of `token`, with or without ``hash_tokens``.

    Checking both forms needs no knowledge of the store's setting: a raw token equal
    to the hash of another token would be a SHA-256 preimage.

    Args:
        key: An `OwnedSession.key`.
        token: The request's token, or None.

    Returns:
        True if `key` stores `token`.
    """
    return token is not None and key in (token, hash_token(token))


def listing(
    owned: list[OwnedSession], token: str | None, decode: Callable[[bytes], dict[str, Any]]
) -> list[UserSession]:
    """Turn the store's `OwnedSession` rows into `UserSession`s for one request.

    Args:
        owned: What the store's ``sessions_of`` returned.
        token: The request's token, to mark its own session.
        decode: Turns stored data into a dict (returns ``{}`` when it can't).

    Returns:
        The sessions, in the store's order (soonest to expire first).
    """
    return [UserSession(s.key, s.expiry, is_current(s.key, token), decode(s.data)) for s in owned]


def owner_of(data: object) -> str | None:
    """The owner a session's decoded data holds, or None for an anonymous session."""
    if isinstance(data, dict):
        owner = data.get(OWNER_KEY)
        if isinstance(owner, str) and owner:
            return owner
    return None


async def create_fresh(create: Callable[[str], Awaitable[bool]]) -> str:
    """Save a new session under a fresh token with ``create``; retry on a collision.

    `create` never overwrites a live session, so a token that happens to be taken
    leaves the other session alone and is simply replaced by another.

    Args:
        create: Saves the session under the token it is given; False if taken.

    Returns:
        The token the session was saved under.

    Raises:
        RuntimeError: If every attempt collided (a broken random source).
    """
    for _ in range(_CREATE_ATTEMPTS):
        token = new_token()
        if await create(token):
            return token
        logger.warning("a freshly generated session token was already taken; trying another")
    raise RuntimeError(f"no free session token after {_CREATE_ATTEMPTS} attempts")


def create_fresh_sync(create: Callable[[str], bool]) -> str:
    """`create_fresh` for a synchronous ``create``.

    Args:
        create: Saves the session under the token it is given; False if taken.

    Returns:
        The token the session was saved under.

    Raises:
        RuntimeError: If every attempt collided (a broken random source).
    """
    for _ in range(_CREATE_ATTEMPTS):
        token = new_token()
        if create(token):
            return token
        logger.warning("a freshly generated session token was already taken; trying another")
    raise RuntimeError(f"no free session token after {_CREATE_ATTEMPTS} attempts")


def new_token() -> str:
    """Return a fresh session token: 32 random bytes, url-safe base64 (43 characters).

    Returns:
        The token.
    """
    return secrets.token_urlsafe(32)


def is_token(value: object) -> bool:
    """Tell whether a cookie value has the shape of a token this library issues.

    Anything else (empty, tampered, another library's ID) is never looked up: it can
    name no session, and the check keeps odd input away from the database.

    Args:
        value: The cookie's value.

    Returns:
        True if it is 43 url-safe base64 characters.
    """
    return isinstance(value, str) and _TOKEN_RE.fullmatch(value) is not None


def to_timedelta(value: dt.timedelta | float, name: str) -> dt.timedelta:
    """Check a duration given in seconds or as a timedelta.

    Args:
        value: The duration.
        name: The option's name, for the error message.

    Returns:
        The duration as a timedelta.

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
    """Build the ImportError raised when an integration's extra is not installed.

    Args:
        module: The integration module, e.g. ``"sessionstore.integrations.flask"``.
        extra: The extra that installs its dependencies, e.g. ``"flask"``.
        exc: The original ImportError.

    Returns:
        An ImportError whose message says what to install.
    """
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
    """The ``Vary`` value with ``Cookie`` merged in, or None if it is there already.

    Args:
        values: The response's ``Vary`` header values (possibly several, each a
            comma-separated list).

    Returns:
        The single value to set (the old ones joined, then ``Cookie``), or None when
        nothing changes (``Cookie`` or ``*`` is listed).
    """
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if any(name == "*" or name.lower() == "cookie" for name in names):
        return None
    return ", ".join([*names, "Cookie"])


def cache_control_with_no_cache_set_cookie(values: list[str]) -> str | None:
    """The ``Cache-Control`` value with ``no-cache="Set-Cookie"`` merged in.

    Args:
        values: The response's ``Cache-Control`` header values.

    Returns:
        The single value to set, or None when nothing changes (the directive, or a
        plain ``no-cache`` or ``no-store``, which covers it, is there already).
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
