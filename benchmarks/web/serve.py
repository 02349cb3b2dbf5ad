"""The server process of one web benchmark contender: ``python -m benchmarks.web.serve``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .apps import AppConfig
from .contenders import BY_KEY, SERVERS, WebContender

#: Requests in flight get this long at a graceful stop.
GRACE = 10


def _uvicorn(app: Any, sock: socket.socket) -> None:
    import uvicorn

    opts: dict[str, Any] = {"http": "httptools", "loop": "asyncio", "lifespan": "on"}
    opts.update(log_level="warning", access_log=False, timeout_keep_alive=60)
    server = uvicorn.Server(uvicorn.Config(app, timeout_graceful_shutdown=GRACE, **opts))
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit("uvicorn did not start (see its log above)")


def _aiohttp(app: Any, sock: socket.socket) -> None:
    from aiohttp import web

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=GRACE)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())


def _gunicorn(load: Callable[[], tuple[Any, Callable[[], None]]], fd: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    closers: list[Callable[[], None]] = []

    def worker_exit(server: Any, worker: Any) -> None:
        for close in closers:
            close()

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = dict(bind=[f"fd://{fd}"], workers=1, worker_class="gthread", threads=threads)
            settings.update(
                keepalive=60, graceful_timeout=GRACE, accesslog=None, loglevel="warning"
            )
            for name, value in {**settings, "worker_exit": worker_exit}.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            # In the worker (no preload): pools open after the fork, as they must.
            app, close = load()
            closers.append(close)
            return app

    Application().run()


def serve(contender: WebContender, config: AppConfig, fd: int) -> None:
    """Serve `contender`'s app on the listening socket `fd` until SIGTERM."""
    from . import apps

    store = contender.store
    if SERVERS[contender.framework][0] == "gunicorn":

        def load() -> tuple[Any, Callable[[], None]]:
            if contender.framework == "flask":
                return apps.flask(store, config)
            from django.core.wsgi import get_wsgi_application

            from . import django_site

            django_site.configure(store, config)
            return get_wsgi_application(), lambda: None

        _gunicorn(load, fd, config.threads)
        return
    sock = socket.socket(fileno=fd)
    if contender.framework == "aiohttp":
        _aiohttp(apps.aiohttp(store, config), sock)
    else:
        asgi = {"litestar": apps.litestar, "starlette": apps.starlette, "quart": apps.quart}
        _uvicorn(asgi[contender.framework](store, config), sock)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one contender (or create Django's table)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.web.serve")
    p.add_argument("contender", nargs="?", choices=sorted(BY_KEY))
    p.add_argument("--fd", type=int, help="the listening socket, inherited")
    p.add_argument("--config", help="the AppConfig, as JSON")
    p.add_argument("--migrate-django", metavar="DSN", help="create Django's table, and exit")
    args = p.parse_args(argv)
    if args.migrate_django:
        from . import django_site

        django_site.migrate(args.migrate_django)
        return 0
    if args.contender is None or args.fd is None or args.config is None:
        p.error("give a contender, --fd and --config")
    config = AppConfig(**json.loads(args.config))
    serve(BY_KEY[args.contender], config, args.fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
