"""The web benchmark's contenders: a framework, the store behind its sessions, a server."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Literal

Server = Literal["uvicorn", "aiohttp", "gunicorn"]

#: What the clients do (`benchmarks.web.client.steps_for`): ``write``, every request
#: changes the session (``/count``); ``read``, one ``/count`` creates the session and
#: every later request only reads it (``/read``); ``mostly``, nine reads after every
#: write (a request that only reads is what most page views are).
WORKLOADS = ("write", "read", "mostly")

#: The stores that keep sessions in Redis (the contenders that need `redis-server`).
REDIS = "redis"
#: sessionstore's two variants: renewal when due, and renewal on every request.
SESSIONSTORE = "sessionstore"
EVERY_REQUEST = "sessionstore-every-request"

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
    "litestar": ("litestar", "uvicorn", "httptools", "redis"),
    "aiohttp": ("aiohttp", "aiohttp_session", "cryptography", "redis"),
    "django": ("django", "gunicorn", "redis"),
    "flask": ("flask", "gunicorn", "flask_session", "redis"),
    "starlette": ("starlette", "starsessions", "itsdangerous", "uvicorn", "httptools", "redis"),
}

#: The module of sessionstore's Django integration (built on a branch of its own while
#: this benchmark was): its contender runs where the module exists, and is reported as
#: not available, with the reason, where it does not (an older checkout).
DJANGO_INTEGRATION = "sessionstore.integrations.django"


@dataclasses.dataclass(frozen=True)
class WebContender:
    """One app to serve and load."""

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
    def redis(self) -> bool:
        """Whether it keeps its sessions in Redis."""
        return self.store == REDIS

    @property
    def sessionstore(self) -> bool:
        """Whether it is one of sessionstore's variants."""
        return self.store in (SESSIONSTORE, EVERY_REQUEST)

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


def _ours(
    framework: str, label: str, *, optional: bool = False, needs: tuple[str, ...] = ()
) -> tuple[WebContender, WebContender]:
    """sessionstore's two variants for `framework`: renewal when due, and on every request."""
    return (
        _c(framework, SESSIONSTORE, label, optional=optional, needs=needs),
        _c(
            framework,
            EVERY_REQUEST,
            f"{label}, renewal every request",
            optional=optional,
            needs=needs,
        ),
    )


CONTENDERS: tuple[WebContender, ...] = (
    _c("litestar", "none", "no session (ceiling)"),
    _c("litestar", "memory", "server-side, MemoryStore", default=True),
    _c("litestar", "file", "server-side, FileStore"),
    _c("litestar", "redis", "server-side, RedisStore"),
    *_ours("litestar", "sessionstore SessionConfig + PostgresStore"),
    _c("aiohttp", "none", "no session (ceiling)"),
    _c("aiohttp", "cookie", "EncryptedCookieStorage", default=True),
    _c("aiohttp", "redis", "RedisStorage"),
    *_ours("aiohttp", "sessionstore PostgresStorage"),
    _c("django", "none", "no session (ceiling)"),
    _c("django", "db", "backends.db", default=True),
    _c("django", "cached_db", "backends.cached_db (LocMemCache)"),
    _c("django", "redis", "backends.cache on RedisCache"),
    *_ours(
        "django",
        "sessionstore SESSION_ENGINE",
        optional=True,
        needs=(DJANGO_INTEGRATION,),
    ),
    _c("flask", "none", "no session (ceiling)"),
    _c("flask", "cookie", "signed cookie (Flask's default)", default=True),
    _c("flask", "redis", "Flask-Session RedisSessionInterface"),
    *_ours("flask", "sessionstore PostgresSessionInterface"),
    _c("starlette", "none", "no session (ceiling)"),
    _c("starlette", "cookie", "SessionMiddleware, signed cookie", default=True),
    _c("starlette", "memory", "starsessions InMemoryStore"),
    _c("starlette", "redis", "starsessions RedisStore"),
    *_ours("starlette", "starsessions + sessionstore PostgresStore"),
)

BY_KEY = {c.key: c for c in CONTENDERS}


#: Every store name, for ``--stores``.
STORES = tuple(dict.fromkeys(c.store for c in CONTENDERS))


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
