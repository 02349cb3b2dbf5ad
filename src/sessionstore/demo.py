"""``python -m sessionstore demo``: the example app served for a browser (docs/demo.md).

It serves `sessionstore.examples` on a throw-away PostgreSQL (or the one given) until
SIGINT or SIGTERM, then stops the web server, the pool and PostgreSQL, and exits 0.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import re
import signal
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import psycopg
import psycopg.sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ._from_dsn import create_table
from .errors import first_line
from .store import Store

__all__ = ["DEFAULT_FRAMEWORK", "FRAMEWORKS", "run"]

#: Each framework's title and what serves it: each "{dist}" stands for that distribution's
#: version, and its module is needed (the framework's extra brings it).
_FRAMEWORKS: dict[str, tuple[str, str]] = {
    "starlette": (
        "Starlette",
        "uvicorn {uvicorn}, serving Starlette {starlette} with starsessions {starsessions} "
        "on AsyncStore",
    ),
    "flask": (
        "Flask",
        "werkzeug {werkzeug} (threaded), serving Flask {flask} with PostgresSessionInterface "
        "on Store",
    ),
    "litestar": (
        "Litestar",
        "uvicorn {uvicorn}, serving Litestar {litestar} with PostgresStore and SessionConfig "
        "on AsyncStore",
    ),
    "aiohttp": (
        "aiohttp",
        "aiohttp {aiohttp} (AppRunner), with aiohttp-session {aiohttp-session} and "
        "PostgresStorage on AsyncStore",
    ),
    "quart": (
        "Quart",
        "uvicorn {uvicorn}, serving Quart {quart} with PostgresSessionInterface on AsyncStore",
    ),
    "django": (
        "Django",
        "uvicorn {uvicorn}, serving Django {django} (async views) with the sessionstore "
        "session engine",
    ),
}
FRAMEWORKS = tuple(_FRAMEWORKS)
DEFAULT_FRAMEWORK = "starlette"

_POOL_ARGS: dict[str, Any] = {"min_size": 1, "max_size": 4, "kwargs": {"autocommit": True}}
_DIST = re.compile(r"\{([\w-]+)\}")
_CONNECT_TIMEOUT = 10
_STOP_TIMEOUT = 10  # requests in flight get this long to finish
_POLL = 0.05


def _routes(message: str) -> tuple[tuple[str, str], ...]:
    """The example app's routes and what they do, given what ``/put`` stores."""
    return (
        ("/put", f'stores "{message}" in your session'),
        ("/get", "shows what the session holds"),
        ("/login", "logs you in: a new token (the data stays, the old token dies)"),
        ("/sessions", "lists your sessions (an id, times and expiry each)"),
        ("/logout-everywhere", "ends all your other sessions; this one stays"),
        ("/logout", "deletes the session (its row and its cookie)"),
    )


def _served_by(framework: str) -> str:
    """What serves `framework`'s app, with the versions installed."""

    def version(match: re.Match[str]) -> str:
        try:
            return importlib.metadata.version(match[1])
        # Importable without its metadata (a vendored copy): the banner only says less.
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            return "(unknown version)"

    return _DIST.sub(version, _FRAMEWORKS[framework][1])


# --------------------------------------------------------------------------- the servers


def _serve(
    framework: str,
    app_module: Any,
    dsn: str,
    sock: socket.socket,
    table: str,
    schema: str | None,
    signals: _Signals,
    ready: Callable[[], None],
) -> None:
    """Serve the example app on `sock` until a signal stops it; call `ready` once it serves."""
    create_app = app_module.create_app
    if framework == "flask":
        with (
            ConnectionPool(dsn, **_POOL_ARGS) as sync_pool,
            Store(sync_pool, table=table, schema=schema, owners=True) as store,
        ):
            _serve_werkzeug(create_app(store), sock, signals, ready)
    elif framework == "aiohttp":
        _serve_aiohttp(create_app(dsn, table=table, schema=schema), sock, signals, ready)
    elif framework == "litestar":
        _uvicorn(create_app(dsn, table=table, schema=schema), sock, signals, ready)
    elif framework == "django":
        # Any Host header: the demo answers on whatever address it was told to listen on.
        app = create_app(dsn, asgi=True, table=table, schema=schema, allowed_hosts=["*"])
        _uvicorn(app, sock, signals, ready)
    else:  # starlette, quart: their lifespan opens the pool (in the loop that serves it)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, open=False, **_POOL_ARGS)
        _uvicorn(create_app(pool, table=table, schema=schema), sock, signals, ready)


def _uvicorn(app: Any, sock: socket.socket, signals: _Signals, ready: Callable[[], None]) -> None:
    """Serve an ASGI app with uvicorn in the main thread, where its handlers own the signals."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                ready()

    config = uvicorn.Config(
        app, lifespan="on", log_level="info", timeout_graceful_shutdown=_STOP_TIMEOUT
    )
    server = Server(config)
    # A signal after this, before uvicorn has put its handlers in, must stop it too.
    signals.serving(on_signal=lambda: setattr(server, "should_exit", True))
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn's answer to a failed lifespan startup
        raise RuntimeError("uvicorn failed to start (see its log above)") from exc
    if not signals.received:
        raise RuntimeError("the web server stopped unexpectedly")


def _serve_aiohttp(
    app: Any, sock: socket.socket, signals: _Signals, ready: Callable[[], None]
) -> None:
    """Serve on aiohttp's own server until a signal; its cleanup_ctx closes the pool."""
    import asyncio
    import warnings

    from aiohttp import web

    # aiohttp-session 2.12 keys the request's storage by str, which aiohttp 3.14
    # warns about: not the demo user's business.
    warnings.filterwarnings("ignore", "It is recommended to use web.RequestKey", UserWarning)

    async def serve() -> None:
        runner = web.AppRunner(app, shutdown_timeout=_STOP_TIMEOUT)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            ready()
            signals.serving()
            # The signal handler may only set attributes (see _Signals): poll them.
            while not signals.received:  # noqa: ASYNC110
                await asyncio.sleep(_POLL)
        finally:
            await runner.cleanup()

    asyncio.run(serve())


def _serve_werkzeug(
    app: Any, sock: socket.socket, signals: _Signals, ready: Callable[[], None]
) -> None:
    """Serve a WSGI app on werkzeug's threaded server, in a thread: it handles no signals."""
    from werkzeug.serving import make_server

    host, port = sock.getsockname()[:2]
    server = make_server(host, port, app, threaded=True, fd=sock.fileno())
    thread = threading.Thread(
        target=server.serve_forever, name="sessionstore-demo-werkzeug", daemon=True
    )
    try:
        thread.start()
        ready()
        signals.serving()
        while not signals.received:
            if not thread.is_alive():
                raise RuntimeError("the web server stopped unexpectedly")
            thread.join(_POLL)
    finally:
        if thread.is_alive():
            server.shutdown()
            thread.join(_STOP_TIMEOUT)
        server.server_close()


# --------------------------------------------------------------------------- signals


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the demo was starting."""


class _Signals:
    """SIGINT and SIGTERM: interrupt while starting, then only record (and poll).

    The handler only sets attributes: it runs between two bytecodes of the main thread,
    which may hold any lock. uvicorn's handlers replace these while it serves.
    """

    def __init__(self) -> None:
        self.received = False
        self.name = ""
        self._raising = True
        self._on_signal: Callable[[], None] | None = None
        self._saved: dict[int, Any] = {}
        self._unraisable = sys.unraisablehook

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        sys.unraisablehook = self._dropped
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._unraisable

    def _dropped(self, unraisable: Any) -> None:
        """Hide an `_Interrupted` lost in a callback or ``__del__`` (`serving` raises it again)."""
        if not isinstance(unraisable.exc_value, _Interrupted):
            self._unraisable(unraisable)

    def serving(self, on_signal: Callable[[], None] | None = None) -> None:
        """From now on a signal only asks the server to stop; `_Interrupted` if one came already."""
        self._raising = False
        self._on_signal = on_signal
        if self.received:
            raise _Interrupted

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.received:
            self.received, self.name = True, signal.Signals(signum).name
            if self._raising:
                raise _Interrupted
        if self._on_signal is not None:
            self._on_signal()


# --------------------------------------------------------------------------- the run


def run(
    *,
    dsn: str | None,
    host: str = "127.0.0.1",
    port: int = 4000,
    framework: str = DEFAULT_FRAMEWORK,
    table: str = "sessions",
    schema: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Serve the demo until SIGINT or SIGTERM, then clean everything up; in the main thread.

    The arguments are the command's options (docs/demo.md#options); ``dsn=None`` starts a
    throw-away PostgreSQL, and ``out`` is where to print what is served and where.

    Returns:
        0 once stopped by a signal.

    Raises:
        ValueError: If `framework` is unknown.
        RuntimeError: If a framework is not installed, the port is taken, the
            server cannot be reached or the web server fails to start.
        sessionstore.DatabaseError: If the table cannot be created.
    """
    if framework not in _FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")
    _check_installed(framework)
    app_module = importlib.import_module(f"{__package__}.examples.{framework}_app")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    throwaway = dsn is None
    with _Signals() as signals:
        try:
            with contextlib.ExitStack() as stack:
                say(f"sessionstore demo: the SCS example app on {_FRAMEWORKS[framework][0]}")
                sock = _bind(host, port)  # first: a taken port fails before PostgreSQL starts
                stack.callback(sock.close)
                if dsn is None:
                    say("no --dsn and no $SESSIONSTORE_DSN: starting a throw-away PostgreSQL")
                    dsn = stack.enter_context(_throwaway_postgres(say))
                else:
                    say("PostgreSQL:  the server given by --dsn or $SESSIONSTORE_DSN")
                say(f"table:       {_create_table(dsn, table, schema)}")
                netloc = _netloc(host, sock.getsockname()[1])

                def ready() -> None:
                    say(f"web server:  {_served_by(framework)}")
                    say()
                    say(
                        "Open in a browser, or with curl and a cookie jar (curl -b jar -c jar URL):"
                    )
                    for path, what in _routes(app_module.MESSAGE):
                        say(f"  http://{netloc}{path:<18} {what}")
                    say()
                    say("Press Ctrl-C to stop.")

                _serve(framework, app_module, dsn, sock, table, schema, signals, ready)
                say(f"\n{signals.name}: the web server stopped")
        except _Interrupted:
            say(f"\n{signals.name or 'interrupted'}: stopped while starting")
    say("stopped: nothing left running" + (", temporary files deleted" if throwaway else ""))
    return 0


def _check_installed(framework: str) -> None:
    served = _FRAMEWORKS[framework][1]
    for module in sorted(dist.replace("-", "_") for dist in _DIST.findall(served)):
        try:
            __import__(module)
        except ImportError as exc:
            hint = '"sessionstore[test]"' if module == "uvicorn" else f'"sessionstore[{framework}]"'
            raise RuntimeError(
                f"the {framework} demo needs {module}, which is not installed: pip install {hint}"
            ) from exc


@contextlib.contextmanager
def _throwaway_postgres(say: Callable[[str], None]) -> Iterator[str]:
    from .testing import ephemeral_postgres

    with ephemeral_postgres(env_var=None) as server:
        datadir, pid = _describe(server.dsn)
        say(f"PostgreSQL:  {server.source}, pid {pid}, on {server.host}:{server.port}")
        say(f"data:        {datadir} (deleted on exit)")
        yield server.dsn
        say("stopping PostgreSQL")


def _describe(dsn: str) -> tuple[str, str]:
    """The data directory and postmaster PID of a server started here."""
    with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    datadir = str(row[0]) if row else "?"
    try:
        pid = (Path(datadir) / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except OSError:
        pid = "?"
    return datadir, pid


def _create_table(dsn: str, table: str, schema: str | None) -> str:
    existed = _table_exists(dsn, table, schema)
    # With the owner column: /sessions and /logout-everywhere need it.
    name, created = create_table(dsn, table, schema, owners=True, connect_timeout=_CONNECT_TIMEOUT)
    if not created:
        return f"{name} (already there)"
    return f"{name} ({'owner column added' if existed else 'created'})"


def _table_exists(dsn: str, table: str, schema: str | None) -> bool:
    """Whether the table is there already (to say what `create_table` did to it)."""
    parts = (table,) if schema is None else (schema, table)
    try:
        with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT) as conn:
            name = psycopg.sql.Identifier(*parts).as_string(conn)
            row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"cannot connect: {first_line(exc)}") from exc
    return row is not None and row[0] is not None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise RuntimeError(
            f"cannot listen on {_netloc(host, port)}: {exc.strerror}; pick another --port"
        ) from exc
    return sock


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
