"""The web benchmark's contenders: a framework, the store behind its sessions, a server.

Nothing here imports a web framework: the main process is the load generator, and a
contender's framework is imported only in the server process that serves it
(`benchmarks.web.serve`, building the app with `benchmarks.web.apps`).

Every framework has:

- a **no-session ceiling** (``<framework>_none``): the same framework on the same
  server, with no session middleware, answering ``GET /ping``; what one worker of the
  framework can serve at all, and the load the client can generate;
- its **default store** (the one ratios are taken to): Litestar's server-side
  sessions on ``MemoryStore``, aiohttp-session's ``EncryptedCookieStorage``, Django's
  ``db`` backend, Flask's signed cookie, Starlette's own ``SessionMiddleware`` (a
  signed cookie);
- other stores it ships (Litestar's ``FileStore``, Django's ``cached_db``,
  starsessions' ``InMemoryStore``);
- sessionstore's integration for it.

Every session contender answers ``GET /count``: read an integer from the session,
add one, store it, return it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Literal

Server = Literal["uvicorn", "aiohttp", "gunicorn"]

FRAMEWORKS = ("litestar", "aiohttp", "django", "flask", "starlette")

#: What serves each framework: one worker process each (see `benchmarks.web.serve`).
SERVERS: dict[str, Server] = {
    "litestar": "uvicorn",
    "aiohttp": "aiohttp",
    "django": "gunicorn",
    "flask": "gunicorn",
    "starlette": "uvicorn",
}

#: What each framework's contenders need installed (the ``bench`` extra brings them).
REQUIRES: dict[str, tuple[str, ...]] = {
    "litestar": ("litestar", "uvicorn", "httptools"),
    "aiohttp": ("aiohttp", "aiohttp_session", "cryptography"),
    "django": ("django", "gunicorn"),
    "flask": ("flask", "gunicorn"),
    "starlette": ("starlette", "starsessions", "itsdangerous", "uvicorn", "httptools"),
}

#: The module of sessionstore's Django integration (built on a branch of its own while
#: this benchmark was): its contender runs where the module exists, and is reported as
#: not available, with the reason, where it does not (an older checkout).
DJANGO_INTEGRATION = "sessionstore.integrations.django"


@dataclasses.dataclass(frozen=True)
class WebContender:
    """One app to serve and load.

    Attributes:
        key: ``<framework>_<store>``, the contender's name in the JSON.
        framework: One of `FRAMEWORKS`.
        store: What keeps the sessions: ``"none"`` (the no-session ceiling),
            ``"sessionstore"``, or the framework's own (``"memory"``, ``"file"``,
            ``"cookie"``, ``"db"``, ``"cached_db"``).
        label: What the table calls it.
        default: The framework's default store: the ratios are taken to it.
        optional: A module it needs may not exist yet (`needs`): then it is
            reported as not available instead of failing the run.
        needs: Modules beyond the framework's that must exist for it to run.
    """

    key: str
    framework: str
    store: str
    label: str
    default: bool = False
    optional: bool = False
    needs: tuple[str, ...] = ()

    @property
    def sessions(self) -> bool:
        """Whether requests go through a session (False for the ceiling)."""
        return self.store != "none"

    @property
    def path(self) -> str:
        """What the clients request."""
        return "/count" if self.sessions else "/ping"

    @property
    def server(self) -> Server:
        """What serves it."""
        return SERVERS[self.framework]

    def unavailable(self) -> str | None:
        """Why an optional contender can't run here, or None if it can."""
        for module in self.needs:
            if importlib.util.find_spec(module) is None:
                return f"{module} does not exist here"
        return None


def _c(
    framework: str,
    store: str,
    label: str,
    *,
    default: bool = False,
    optional: bool = False,
    needs: tuple[str, ...] = (),
) -> WebContender:
    return WebContender(f"{framework}_{store}", framework, store, label, default, optional, needs)


CONTENDERS: tuple[WebContender, ...] = (
    _c("litestar", "none", "no session (ceiling)"),
    _c("litestar", "memory", "server-side, MemoryStore", default=True),
    _c("litestar", "file", "server-side, FileStore"),
    _c("litestar", "sessionstore", "sessionstore SessionConfig + PostgresStore"),
    _c("aiohttp", "none", "no session (ceiling)"),
    _c("aiohttp", "cookie", "EncryptedCookieStorage", default=True),
    _c("aiohttp", "sessionstore", "sessionstore PostgresStorage"),
    _c("django", "none", "no session (ceiling)"),
    _c("django", "db", "backends.db", default=True),
    _c("django", "cached_db", "backends.cached_db (LocMemCache)"),
    _c(
        "django",
        "sessionstore",
        "sessionstore SESSION_ENGINE",
        optional=True,
        needs=(DJANGO_INTEGRATION,),
    ),
    _c("flask", "none", "no session (ceiling)"),
    _c("flask", "cookie", "signed cookie (Flask's default)", default=True),
    _c("flask", "sessionstore", "sessionstore PostgresSessionInterface"),
    _c("starlette", "none", "no session (ceiling)"),
    _c("starlette", "cookie", "SessionMiddleware, signed cookie", default=True),
    _c("starlette", "memory", "starsessions InMemoryStore"),
    _c("starlette", "sessionstore", "starsessions + sessionstore PostgresStore"),
)

BY_KEY = {c.key: c for c in CONTENDERS}


def of_framework(framework: str) -> list[WebContender]:
    """The contenders of `framework`, in table order."""
    return [c for c in CONTENDERS if c.framework == framework]


def missing_requirements(frameworks: tuple[str, ...]) -> list[str]:
    """The modules the chosen frameworks need that are not installed."""
    missing: list[str] = []
    for framework in frameworks:
        for module in REQUIRES[framework]:
            if importlib.util.find_spec(module) is None and module not in missing:
                missing.append(module)
    return missing
