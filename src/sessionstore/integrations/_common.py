"""What the integrations share: token issuing and checking, and the missing-extra error."""

from __future__ import annotations

import datetime as dt
import re
import secrets

#: Tokens as SCS issues them: 32 random bytes in url-safe base64 without padding.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")

#: The server-side lifetime of a session whose cookie lasts as long as the browser
#: runs: the server never learns when the browser closes.
DEFAULT_SESSION_ONLY_TTL = dt.timedelta(hours=24)


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
