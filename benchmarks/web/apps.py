"""The apps the web benchmark serves, one per contender; built in the server process."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

#: The secret of the cookie stores (a benchmark's: never a real one).
SECRET = "sessionstore-web-benchmark-secret-not-for-production"


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What an app is built with (passed to the server process as JSON)."""

    dsn: str
    table: str = "web_sessions"
    pool: int = 16
    min_pool: int = 1
    threads: int = 16
    redis_url: str | None = None
    workdir: str = "."

    def redis(self) -> str:
        """The Redis URL, which a Redis contender can't run without."""
        if self.redis_url is None:
            raise ValueError("a Redis contender needs the benchmark's Redis (redis_url)")
        return self.redis_url


def renew_after(store: str) -> float:
    """The renewal share sessionstore's variant `store` runs with."""
    from sessionstore.manager import DEFAULT_RENEW_AFTER

    return 0.0 if store == "sessionstore-every-request" else DEFAULT_RENEW_AFTER


def bump(session: MutableMapping[str, Any]) -> str:
    """What ``/count`` does: add one to the session's integer, and answer it."""
    session["count"] = n = int(session.get("count", 0)) + 1
    return str(n)


def peek(session: Mapping[str, Any]) -> str:
    """What ``/read`` does: answer the session's integer."""
    return str(int(session.get("count", 0)))


def async_store(config: AppConfig) -> tuple[Any, Any]:
    """An `AsyncStore` (no cleanup) on a closed autocommit pool, and the pool: the app
    opens them in the loop that serves it."""
    from psycopg_pool import AsyncConnectionPool

    from sessionstore import AsyncStore
    from sessionstore.cleanup import NoCleanup

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        config.dsn,
        min_size=config.min_pool,
        max_size=config.pool,
        open=False,
        kwargs={"autocommit": True},
    )
    return AsyncStore(pool, table=config.table, cleanup=NoCleanup()), pool


def litestar(store: str, config: AppConfig) -> Any:
    """The Litestar app of `store` (an ASGI app)."""
    from litestar import Litestar, MediaType, Request, get
    from litestar.middleware.session.server_side import ServerSideSessionConfig
    from litestar.stores.base import Store
    from litestar.stores.file import FileStore

    @get("/ping", media_type=MediaType.TEXT)
    async def ping() -> str:
        return "pong"

    @get("/count", media_type=MediaType.TEXT)
    async def count(request: Request[Any, Any, Any]) -> str:
        return bump(request.session)

    @get("/read", media_type=MediaType.TEXT)
    async def read(request: Request[Any, Any, Any]) -> str:
        return peek(request.session)

    if store == "none":
        return Litestar(route_handlers=[ping], debug=False, logging_config=None)
    stores: dict[str, Store] = {}  # without "sessions", app.stores' default: MemoryStore
    middleware: Any = ServerSideSessionConfig().middleware
    if store == "file":
        stores["sessions"] = FileStore(Path(config.workdir, "sessions"), create_directories=True)
    elif store == "redis":
        from litestar.stores.redis import RedisStore

        # As Litestar's docs set it up: the store owns its client and closes it at
        # the app's shutdown.
        stores["sessions"] = RedisStore.with_client(url=config.redis())
    elif store in ("sessionstore", "sessionstore-every-request"):
        from sessionstore.cleanup import NoCleanup
        from sessionstore.integrations.litestar import PostgresStore, SessionConfig

        root = PostgresStore.from_dsn(
            config.dsn,
            min_size=config.min_pool,
            max_size=config.pool,
            table=config.table,
            cleanup=NoCleanup(),
        )
        stores["sessions"] = root.with_namespace("sessions")
        middleware = SessionConfig(secure=False, renew_after=renew_after(store)).middleware
    elif store != "memory":
        raise ValueError(f"Litestar has no store {store!r} here")
    return Litestar(
        route_handlers=[ping, count, read],
        stores=stores,
        middleware=[middleware],
        debug=False,
        logging_config=None,
    )


def aiohttp(store: str, config: AppConfig) -> Any:
    """The aiohttp app of `store` (a ``web.Application``)."""
    from aiohttp import web
    from aiohttp_session import get_session, setup

    # aiohttp-session 2.12 keys the request's session by str, which aiohttp 3.14
    # warns about on every request (the test suite ignores it likewise).
    warnings.filterwarnings("ignore", "It is recommended to use web.RequestKey", UserWarning)

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=bump(await get_session(request)))

    async def read(request: web.Request) -> web.Response:
        return web.Response(text=peek(await get_session(request)))

    app = web.Application()
    app.router.add_get("/ping", ping)
    if store == "none":
        return app
    app.router.add_get("/count", count)
    app.router.add_get("/read", read)
    if store == "cookie":
        from aiohttp_session.cookie_storage import EncryptedCookieStorage

        # 32 raw bytes: the storage base64-encodes them into a Fernet key.
        setup(app, EncryptedCookieStorage(SECRET.encode()[:32]))
    elif store == "redis":
        from aiohttp_session.redis_storage import RedisStorage
        from redis import asyncio as aioredis

        # aiohttp-session's docs: a redis.asyncio client from a URL, closed at cleanup.
        client = aioredis.from_url(config.redis())

        async def close_redis(app: web.Application) -> None:
            await client.aclose()

        setup(app, RedisStorage(client))
        app.on_cleanup.append(close_redis)
    elif store in ("sessionstore", "sessionstore-every-request"):
        from sessionstore.cleanup import NoCleanup
        from sessionstore.integrations.aiohttp import setup as postgres_setup

        size = {"min_size": config.min_pool, "max_size": config.pool}
        options = {"table": config.table, "cleanup": NoCleanup()}
        postgres_setup(
            app, config.dsn, **size, store_options=options, renew_after=renew_after(store)
        )
    else:
        raise ValueError(f"aiohttp has no store {store!r} here")
    return app


def starlette(store: str, config: AppConfig) -> Any:
    """The Starlette app of `store` (an ASGI app)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ping(request: Request) -> PlainTextResponse:
        return PlainTextResponse("pong")

    async def count(request: Request) -> PlainTextResponse:
        return PlainTextResponse(bump(request.session))

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(peek(request.session))

    routes = [Route("/ping", ping)]
    if store == "none":
        return Starlette(routes=routes)
    routes += [Route("/count", count), Route("/read", read)]
    lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]] | None = None
    if store == "cookie":
        from starlette.middleware.sessions import SessionMiddleware

        middleware = [Middleware(SessionMiddleware, secret_key=SECRET, https_only=False)]
    elif store in ("memory", "redis", "sessionstore", "sessionstore-every-request"):
        import starsessions

        backend: Any = starsessions.InMemoryStore()
        session_middleware: Any = starsessions.SessionMiddleware
        options: dict[str, Any] = {}
        if store == "redis":
            from redis.asyncio import Redis
            from starsessions.stores.redis import RedisStore

            # starsessions' docs: a redis.asyncio connection (its url= is deprecated).
            client = Redis.from_url(config.redis())
            backend = RedisStore(connection=client)

            @contextlib.asynccontextmanager
            async def lifespan(app: Starlette) -> AsyncIterator[None]:
                try:
                    yield
                finally:
                    await client.aclose()

        elif store != "memory":
            from sessionstore.integrations import starlette as integration

            postgres, pool = async_store(config)
            backend = integration.PostgresStore(postgres)
            # The integration's middleware: the session manager's saves.
            session_middleware = integration.SessionMiddleware
            options = {"renew_after": renew_after(store)}

            @contextlib.asynccontextmanager
            async def lifespan(app: Starlette) -> AsyncIterator[None]:
                async with pool, postgres:  # opens the pool in the serving loop
                    await pool.wait()
                    yield

        session = Middleware(session_middleware, store=backend, cookie_https_only=False, **options)
        middleware = [session, Middleware(starsessions.SessionAutoloadMiddleware)]
    else:
        raise ValueError(f"Starlette has no store {store!r} here")
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def flask(store: str, config: AppConfig) -> tuple[Any, Callable[[], None]]:
    """The Flask app of `store` (a WSGI app), and what closes its resources."""
    from flask import Flask, session

    app = Flask("sessionstore_webbench")
    app.secret_key = SECRET

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    close: Callable[[], None] = lambda: None  # noqa: E731 - nothing to close by default
    if store == "none":
        return app, close

    @app.get("/count")
    def count() -> str:
        return bump(session)

    @app.get("/read")
    def read() -> str:
        return peek(session)

    if store == "redis":
        import redis
        from flask_session import Session

        # Flask-Session's docs: SESSION_TYPE and a redis.Redis client in the config;
        # everything else (permanent sessions, refreshed on every request) its default.
        client = redis.Redis.from_url(config.redis())
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        Session(app)
        close = client.close
    elif store in ("sessionstore", "sessionstore-every-request"):
        from psycopg_pool import ConnectionPool

        from sessionstore import Store
        from sessionstore.cleanup import NoCleanup
        from sessionstore.integrations.flask import PostgresSessionInterface

        pool: ConnectionPool[Any] = ConnectionPool(
            config.dsn,
            min_size=config.min_pool,
            max_size=config.pool,
            kwargs={"autocommit": True},
            open=True,
        )
        pool.wait()
        sync_store = Store(pool, table=config.table, cleanup=NoCleanup())
        app.session_interface = PostgresSessionInterface(sync_store, renew_after=renew_after(store))

        def close() -> None:
            try:
                sync_store.close()
            finally:
                pool.close()

    elif store != "cookie":
        raise ValueError(f"Flask has no store {store!r} here")
    return app, close


def quart(store: str, config: AppConfig) -> Any:
    """The Quart app of `store` (an ASGI app)."""
    from quart import Quart, session

    app = Quart("sessionstore_webbench")
    app.secret_key = SECRET

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    if store == "none":
        return app

    @app.get("/count")
    async def count() -> str:
        return bump(session)

    @app.get("/read")
    async def read() -> str:
        return peek(session)

    if store == "redis":
        from quart_session import Session

        # Quart-Session's docs: SESSION_TYPE and SESSION_URI; it makes its redis.asyncio
        # client when the app starts serving, and leaves closing it to the app.
        app.config.update(SESSION_TYPE="redis", SESSION_URI=config.redis())
        Session(app)

        @app.after_serving
        async def close_redis() -> None:
            # Quart types session_interface as its own interface; Quart-Session's
            # (untyped) keeps its redis client in `backend`.
            await app.session_interface.backend.aclose()  # type: ignore[attr-defined]

    elif store in ("sessionstore", "sessionstore-every-request"):
        from sessionstore.integrations.quart import PostgresSessionInterface

        postgres, pool = async_store(config)
        # Quart declares session_interface as SecureCookieSessionInterface (see
        # docs/integrations-quart.md), so any other interface needs this ignore.
        app.session_interface = PostgresSessionInterface(  # type: ignore[assignment]
            postgres, renew_after=renew_after(store)
        )

        @app.before_serving
        async def open_store() -> None:
            await pool.open(wait=True)  # in the serving loop, as docs/integrations-quart.md says
            await postgres.open()

        @app.after_serving
        async def close_store() -> None:
            await postgres.aclose()
            await pool.close()

    elif store != "cookie":
        raise ValueError(f"Quart has no store {store!r} here")
    return app
