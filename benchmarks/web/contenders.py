"""The web benchmark's contenders: a framework, the store behind its sessions, a server."""

from __future__ import annotations

import dataclasses
import importlib.util

#: What the clients do (`benchmarks.web.client.steps_for`): ``write``, every request
#: changes the session (``/count``); ``read``, one ``/count`` creates the session and
#: every later request only reads it (``/read``); ``mostly``, nine reads after every
#: write (a request that only reads is what most page views are).
WORKLOADS = ("write", "read", "mostly")

#: sessionstore's two variants: renewal when due, and renewal on every request.
SESSIONSTORE = "sessionstore"
EVERY_REQUEST = "sessionstore-every-request"

#: Each framework's server, one worker process (`benchmarks.web.serve`), and the modules
#: its contenders need (the ``bench`` extra brings them).
SERVERS = {
    "litestar": ("uvicorn", "litestar uvicorn httptools redis"),
    "aiohttp": ("aiohttp", "aiohttp aiohttp_session cryptography redis"),
    "django": ("gunicorn", "django gunicorn redis"),
    "flask": ("gunicorn", "flask gunicorn flask_session redis"),
    "starlette": ("uvicorn", "starlette starsessions itsdangerous uvicorn httptools redis"),
    "quart": ("uvicorn", "quart quart_session uvicorn httptools redis"),
}
FRAMEWORKS = tuple(SERVERS)


@dataclasses.dataclass(frozen=True)
class WebContender:
    """One app to serve and load."""

    key: str
    framework: str
    store: str
    label: str
    default: bool = False

    @property
    def sessions(self) -> bool:
        """Whether requests go through a session (False for the ceiling)."""
        return self.store != "none"

    @property
    def redis(self) -> bool:
        """Whether it keeps its sessions in Redis (then it needs the benchmark's redis-server)."""
        return self.store == "redis"

    @property
    def sessionstore(self) -> bool:
        """Whether it is one of sessionstore's variants."""
        return self.store in (SESSIONSTORE, EVERY_REQUEST)


def _c(framework: str, store: str, label: str, default: bool = False) -> WebContender:
    return WebContender(f"{framework}_{store}", framework, store, label, default)


def _ours(framework: str, label: str) -> tuple[WebContender, WebContender]:
    """sessionstore's two variants for `framework`: renewal when due, and on every request."""
    every = f"{label}, renewal every request"
    return _c(framework, SESSIONSTORE, label), _c(framework, EVERY_REQUEST, every)


CEILING = "no session (ceiling)"

CONTENDERS: tuple[WebContender, ...] = (
    _c("litestar", "none", CEILING),
    _c("litestar", "memory", "server-side, MemoryStore", default=True),
    _c("litestar", "file", "server-side, FileStore"),
    _c("litestar", "redis", "server-side, RedisStore"),
    *_ours("litestar", "sessionstore SessionConfig + PostgresStore"),
    _c("aiohttp", "none", CEILING),
    _c("aiohttp", "cookie", "EncryptedCookieStorage", default=True),
    _c("aiohttp", "redis", "RedisStorage"),
    *_ours("aiohttp", "sessionstore PostgresStorage"),
    _c("django", "none", CEILING),
    _c("django", "db", "backends.db", default=True),
    _c("django", "cached_db", "backends.cached_db (LocMemCache)"),
    _c("django", "redis", "backends.cache on RedisCache"),
    *_ours("django", "sessionstore SESSION_ENGINE"),
    _c("flask", "none", CEILING),
    _c("flask", "cookie", "signed cookie (Flask's default)", default=True),
    _c("flask", "redis", "Flask-Session RedisSessionInterface"),
    *_ours("flask", "sessionstore PostgresSessionInterface"),
    _c("starlette", "none", CEILING),
    _c("starlette", "cookie", "SessionMiddleware, signed cookie", default=True),
    _c("starlette", "memory", "starsessions InMemoryStore"),
    _c("starlette", "redis", "starsessions RedisStore"),
    *_ours("starlette", "starsessions + sessionstore PostgresStore"),
    _c("quart", "none", CEILING),
    _c("quart", "cookie", "signed cookie (Quart's default)", default=True),
    _c("quart", "redis", "Quart-Session RedisSessionInterface"),
    *_ours("quart", "sessionstore PostgresSessionInterface on AsyncStore"),
)

BY_KEY = {c.key: c for c in CONTENDERS}

#: Every store name, for ``--stores``.
STORES = tuple(dict.fromkeys(c.store for c in CONTENDERS))


def of_framework(framework: str) -> list[WebContender]:
    """The contenders of `framework`, in table order."""
    return [c for c in CONTENDERS if c.framework == framework]


def missing_requirements(frameworks: tuple[str, ...]) -> list[str]:
    """The modules the chosen frameworks need that are not installed."""
    needed = dict.fromkeys(m for f in frameworks for m in SERVERS[f][1].split())
    return [m for m in needed if importlib.util.find_spec(m) is None]
