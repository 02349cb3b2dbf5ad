"""What the integrations share: the browser-session idle timeout, headers, the missing extra."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

#: The server-side idle timeout of a session whose cookie lasts as long as the browser
#: runs: the server never learns when the browser closes.
DEFAULT_SESSION_ONLY_TTL = dt.timedelta(hours=24)


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
