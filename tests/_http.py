"""The HTTP side of the integration tests: a browser stand-in and the example apps' loader.

Shared by test_integration_flask.py and test_integration_starlette.py, which drive
examples/*.py over real HTTP with urllib and a cookie jar.
"""

from __future__ import annotations

import http.cookiejar
import importlib.util
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import sessionstore.examples

#: The example apps' one source: the package the demo serves (examples/ holds launchers).
EXAMPLES = Path(sessionstore.examples.__file__).resolve().parent


def load_example(filename: str) -> ModuleType:
    """Import the example app `filename` afresh (a new module object on every call)."""
    path = EXAMPLES / filename
    spec = importlib.util.spec_from_file_location(f"{path.stem}_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Reply:
    """An HTTP response, as a test looks at it."""

    status: int
    body: str
    cookies: list[str]  # the raw Set-Cookie headers
    headers: Any = None  # all of them (an email.message.Message)


class Client:
    """A browser stand-in: urllib with its own cookie jar."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, cookie: str | None = None) -> Reply:
        """GET with the jar's cookies, or with exactly `cookie` as the Cookie header."""
        request = urllib.request.Request(self.base + path)
        opener = self.opener
        if cookie is not None:
            request.add_header("Cookie", cookie)
            opener = urllib.request.build_opener()
        try:
            with opener.open(request, timeout=30) as response:
                body = response.read().decode()
                return Reply(response.status, body, _set_cookies(response), response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.read().decode(), _set_cookies(exc), exc.headers)

    def token(self, name: str = "session") -> str | None:
        """The session cookie's value in the jar, or None."""
        values = [c.value for c in self.jar if c.name == name]
        return values[0] if values else None


def _set_cookies(response: Any) -> list[str]:
    return list(response.headers.get_all("Set-Cookie") or [])


def issued_token(reply: Reply) -> str:
    """The value of the one cookie `reply` sets."""
    [header] = reply.cookies
    return header.split(";", 1)[0].split("=", 1)[1]


def listed(reply: Reply) -> list[str]:
    """The session lines of a /sessions page of the example apps."""
    assert reply.status == 200, reply.body
    return [line for line in reply.body.splitlines() if "expires" in line]
