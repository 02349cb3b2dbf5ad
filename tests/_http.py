"""The HTTP side of the integration tests: a browser stand-in and the example apps' loader.

Shared by the integration tests (test_integration_*.py), which drive examples/*.py
over real HTTP with urllib and a cookie jar, the ASGI ones served by uvicorn threads.
"""

from __future__ import annotations

import email.message
import http.cookiejar
import importlib.util
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn

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


def run_uvicorn(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Serve an ASGI app (with its lifespan) in a uvicorn thread on a free port.

    Returns:
        The server, its thread and its URL; stop them with `stop_uvicorn`.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn failed to start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def stop_uvicorn(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Stop a server `run_uvicorn` started (its lifespan shutdown runs) and join it."""
    server.should_exit = True
    thread.join(15)
    assert not thread.is_alive()


@dataclass
class Reply:
    """An HTTP response, as a test looks at it."""

    status: int
    body: str
    cookies: list[str]  # the raw Set-Cookie headers
    headers: email.message.Message

    def header(self, name: str) -> list[str]:
        """Every value of header `name`, in order (none: an empty list)."""
        return list(self.headers.get_all(name) or [])


#: An opener without a cookie jar, for requests that send their own Cookie header.
_PLAIN = urllib.request.build_opener()


class Client:
    """A browser stand-in: urllib with its own cookie jar."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self._opener: urllib.request.OpenerDirector | None = None

    @property
    def opener(self) -> urllib.request.OpenerDirector:
        """The opener with this client's jar, made on first use."""
        # Lazily and once: from Python 3.13 every opener loads the system's CA
        # certificates when it is made, which holds the GIL for milliseconds; a
        # test's 128 threads each making openers then queue for seconds.
        if self._opener is None:
            self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        return self._opener

    def get(self, path: str, cookie: str | None = None, agent: str | None = None) -> Reply:
        """GET with the jar's cookies, or with exactly `cookie` as the Cookie header."""
        request = urllib.request.Request(self.base + path)
        if agent is not None:
            request.add_header("User-Agent", agent)
        if cookie is not None:
            request.add_header("Cookie", cookie)
        opener = self.opener if cookie is None else _PLAIN
        try:
            with opener.open(request, timeout=30) as response:
                return Reply(
                    response.status,
                    response.read().decode(),
                    _set_cookies(response),
                    response.headers,
                )
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


#: What SCS adds to the Cache-Control of a response that sets or deletes its cookie.
NO_CACHE_SET_COOKIE = 'no-cache="Set-Cookie"'


def check_scs_headers(client: Client, untouched: str) -> None:
    """Drive an example app with the header routes added and check SCS's headers.

    The app has the example's routes, plus ``/put-cached`` (stores a new value, sends
    ``Cache-Control: private`` and two ``Vary`` headers, ``Accept-Encoding`` and
    ``Origin``), ``/put-uncached`` (stores another new value, sends ``Cache-Control: no-store``) and
    ``/vary-cookie`` (uses the session, sends ``Vary: cookie``); `untouched` is a path
    whose request never uses the session.
    """
    reply = client.get("/put")  # sets the cookie
    assert reply.header("Vary") == ["Cookie"]
    assert reply.header("Cache-Control") == [NO_CACHE_SET_COOKIE]
    reply = client.get("/put-cached")  # merged into the view's own values
    assert reply.header("Vary") == ["Accept-Encoding, Origin, Cookie"]
    assert reply.header("Cache-Control") == [f"private, {NO_CACHE_SET_COOKIE}"]
    reply = client.get("/put-uncached")  # no-store covers it
    assert reply.header("Cache-Control") == ["no-store"]
    reply = client.get("/vary-cookie")  # never twice
    assert reply.header("Vary") == ["cookie"]
    # Read only, renewal not due: no write, no cookie, so no Cache-Control either.
    assert reply.header("Cache-Control") == []
    reply = client.get("/get")
    assert reply.cookies == []
    assert reply.header("Vary") == ["Cookie"]
    assert reply.header("Cache-Control") == []
    for path in ("/login", "/logout"):  # renews, deletes the cookie
        reply = client.get(path)
        assert len(reply.cookies) == 1, path
        assert reply.header("Vary") == ["Cookie"], path
        assert reply.header("Cache-Control") == [NO_CACHE_SET_COOKIE], path
    reply = client.get("/get")  # used the session (none left), set no cookie
    assert reply.cookies == []
    assert reply.header("Vary") == ["Cookie"]
    assert reply.header("Cache-Control") == []
    reply = client.get(untouched)  # never used the session
    assert reply.header("Vary") == []
    assert reply.header("Cache-Control") == []
