"""What the integrations share: tokens, owners, listings, headers, the missing extra."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._core import hash_token

#: Tokens as SCS issues them: 32 random bytes in url-safe base64 without padding.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")

#: The server-side idle timeout of a session whose cookie lasts as long as the browser
#: runs: the server never learns when the browser closes.
DEFAULT_SESSION_ONLY_TTL = dt.timedelta(hours=24)

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


def merge_header(headers: Any, name: str, merge: Callable[[list[str]], str | None]) -> None:
    """Set header `name` of a framework's headers to what `merge` makes of all its values."""
    # All the values: werkzeug's response.vary, say, reads only the first Vary header.
    values = headers.getlist(name) if hasattr(headers, "getlist") else headers.getall(name, [])
    value = merge(values)
    if value is not None:
        headers[name] = value


def vary_with_cookie(values: list[str]) -> str | None:
    """The one ``Vary`` value with ``Cookie`` merged into `values`; None if covered (``*``)."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if any(name == "*" or name.lower() == "cookie" for name in names):
        return None
    return ", ".join([*names, "Cookie"])


def cache_control_with_no_cache_set_cookie(values: list[str]) -> str | None:
    """The one ``Cache-Control`` value with ``no-cache="Set-Cookie"`` merged in; None if covered."""
    directives = [d.strip() for value in values for d in value.split(",") if d.strip()]
    for directive in directives:
        name, _, argument = directive.partition("=")
        name = name.strip().lower()
        if name == "no-store" or (
            name == "no-cache" and argument.strip('" ').lower() in ("", "set-cookie")
        ):
            return None
    return ", ".join([*directives, NO_CACHE_SET_COOKIE])
