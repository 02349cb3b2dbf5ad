"""The apps the web benchmark serves, one per contender; built in the server process."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

#: The secret of the cookie stores (a benchmark's: never a real one).
SECRET = "sessionstore-web-benchmark-secret-not-for-production"


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What an app is built with."""

    dsn: str
    table: str
    pool: int
    workdir: Path
    threads: int
    redis_url: str | None = None

    def redis(self) -> str:
        """The Redis URL, which a Redis contender can't run without."""
        if self.redis_url is None:
            raise ValueError("a Redis contender needs the benchmark's Redis (--redis-url)")
        return self.redis_url


def renew_after(store: str) -> float:
    """The renewal share sessionstore's variant `store` runs with."""
    from sessionstore.manager import DEFAULT_RENEW_AFTER

    return 0.0 if store == "sessionstore-every-request" else DEFAULT_RENEW_AFTER


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
        n = int(request.session.get("count", 0)) + 1
        request.session["count"] = n
        return str(n)

    @get("/read", media_type=MediaType.TEXT)
    async def read(request: Request[Any, Any, Any]) -> str:
        return str(int(request.session.get("count", 0)))

    if store == "none":
        return Litestar(route_handlers=[ping], debug=False, logging_config=None)
    stores: dict[str, Store] = {}
    middleware: Any
    if store == "memory":
        middleware = ServerSideSessionConfig().middleware  # app.stores' default: MemoryStore
    elif store == "file":
        stores["sessions"] = FileStore(config.workdir / "sessions", create_directories=True)
        middleware = ServerSideSessionConfig().middleware
    elif store == "redis":
        from litestar.stores.redis import RedisStore

        # As Litestar's docs set it up: the store owns its client and closes it at
        # the app's shutdown.
        stores["sessions"] = RedisStore.with_client(url=config.redis())
        middleware = ServerSideSessionConfig().middleware
    elif store in ("sessionstore", "sessionstore-every-request"):
        from sessionstore.cleanup import NoCleanup
        from sessionstore.integrations.litestar import PostgresStore, SessionConfig

        root = PostgresStore.from_dsn(
            config.dsn,
            min_size=config.pool,
            max_size=config.pool,
            table=config.table,
            cleanup=NoCleanup(),
        )
        stores["sessions"] = root.with_namespace("sessions")
        middleware = SessionConfig(secure=False, renew_after=renew_after(store)).middleware
    else:
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

    # aiohttp-session 2.12 keys the request's session by str, which aiohttp 3.14
    # warns about on every request (the test suite ignores it likewise).
    warnings.filterwarnings("ignore", "It is recommended to use web.RequestKey", UserWarning)

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def count(request: web.Request) -> web.Response:
        from aiohttp_session import get_session

        session = await get_session(request)
        n = int(session.get("count", 0)) + 1
        session["count"] = n
        return web.Response(text=str(n))

    async def read(request: web.Request) -> web.Response:
        from aiohttp_session import get_session

        session = await get_session(request)
        return web.Response(text=str(int(session.get("count", 0))))

    app = web.Application()
    app.router.add_get("/ping", ping)
    if store == "none":
        return app
    app.router.add_get("/count", count)
    app.router.add_get("/read", read)
    if store == "cookie":
        from aiohttp_session import setup
        from aiohttp_session.cookie_storage import EncryptedCookieStorage

        # 32 raw bytes: the storage base64-encodes them into a Fernet key.
        setup(app, EncryptedCookieStorage(SECRET.encode()[:32]))
    elif store == "redis":
        from aiohttp_session import setup
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

        postgres_setup(
            app,
            config.dsn,
            min_size=config.pool,
            max_size=config.pool,
            store_options={"table": config.table, "cleanup": NoCleanup()},
            renew_after=renew_after(store),
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
        n = int(request.session.get("count", 0)) + 1
        request.session["count"] = n
        return PlainTextResponse(str(n))

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(int(request.session.get("count", 0))))

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

        session: Middleware
        if store == "memory":
            session = Middleware(
                starsessions.SessionMiddleware,
                store=starsessions.InMemoryStore(),
                cookie_https_only=False,
            )
        elif store == "redis":
            from redis.asyncio import Redis
            from starsessions.stores.redis import RedisStore

            # starsessions' docs: a redis.asyncio connection (its url= is deprecated).
            client = Redis.from_url(config.redis())
            session = Middleware(
                starsessions.SessionMiddleware,
                store=RedisStore(connection=client),
                cookie_https_only=False,
            )

            @contextlib.asynccontextmanager
            async def lifespan(app: Starlette) -> AsyncIterator[None]:
                try:
                    yield
                finally:
                    await client.aclose()

        else:
            from psycopg_pool import AsyncConnectionPool

            from sessionstore import AsyncStore
            from sessionstore.cleanup import NoCleanup
            from sessionstore.integrations import starlette as integration
            from sessionstore.integrations.starlette import PostgresStore

            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                config.dsn,
                open=False,
                min_size=config.pool,
                max_size=config.pool,
                kwargs={"autocommit": True},
            )
            async_store = AsyncStore(pool, table=config.table, cleanup=NoCleanup())
            session = Middleware(
                integration.SessionMiddleware,  # the session manager's saves
                store=PostgresStore(async_store),
                cookie_https_only=False,
                renew_after=renew_after(store),
            )

            @contextlib.asynccontextmanager
            async def lifespan(app: Starlette) -> AsyncIterator[None]:
                async with pool, async_store:  # opens the pool in the serving loop
                    await pool.wait()
                    yield

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
        n = int(session.get("count", 0)) + 1
        session["count"] = n
        return str(n)

    @app.get("/read")
    def read() -> str:
        return str(int(session.get("count", 0)))

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
            min_size=config.pool,
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
        n = int(session.get("count", 0)) + 1
        session["count"] = n
        return str(n)

    @app.get("/read")
    async def read() -> str:
        return str(int(session.get("count", 0)))

    if store == "redis":
        from quart_session import Session

        # Quart-Session's docs: SESSION_TYPE and SESSION_URI; it makes its redis.asyncio
        # client when the app starts serving, and leaves closing it to the app.
        app.config.update(SESSION_TYPE="redis", SESSION_URI=config.redis())
        Session(app)

        @app.after_serving
        async def close_redis() -> None:
            await app.session_interface.backend.aclose()  # type: ignore[attr-defined]

    elif store in ("sessionstore", "sessionstore-every-request"):
        from psycopg_pool import AsyncConnectionPool

        from sessionstore import AsyncStore
        from sessionstore.cleanup import NoCleanup
        from sessionstore.integrations.quart import PostgresSessionInterface

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            config.dsn,
            open=False,
            min_size=config.pool,
            max_size=config.pool,
            kwargs={"autocommit": True},
        )
        async_store = AsyncStore(pool, table=config.table, cleanup=NoCleanup())
        app.session_interface = PostgresSessionInterface(  # type: ignore[assignment]
            async_store, renew_after=renew_after(store)
        )

        @app.before_serving
        async def open_store() -> None:
            await pool.open(wait=True)  # in the serving loop, as docs/integrations-quart.md says
            await async_store.open()

        @app.after_serving
        async def close_store() -> None:
            await async_store.aclose()
            await pool.close()

    elif store != "cookie":
        raise ValueError(f"Quart has no store {store!r} here")
    return app
