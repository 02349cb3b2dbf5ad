"""``python -m sessionstore demo``: the SCS README's example app, served for a browser.

The app is the example app itself, imported from `sessionstore.examples` (the one
copy of it; the repository's ``examples/`` launchers run the same modules): ``/put``
stores "Hello from a session!" in the session, ``/get`` reads it back, ``/login``
logs the session in (a new token, owned by the demo's user), ``/sessions`` lists that
user's sessions, ``/logout-everywhere`` ends all of them but the caller's and
``/logout`` deletes the session; ``/`` lists them. It
runs on Starlette (starsessions and `AsyncStore`, served by uvicorn) by default, or on
Flask (`Store`, served by werkzeug) with ``--framework flask``, or on Litestar
(`PostgresStore` and `SessionConfig` on `AsyncStore`, served by uvicorn) with
``--framework litestar``, or on aiohttp (aiohttp-session and `AsyncStore`, served
by aiohttp's own runner) with ``--framework aiohttp``, on Quart
(`PostgresSessionInterface` on `AsyncStore`, served by uvicorn) with ``--framework
quart``, or on Django (the ``sessionstore.integrations.django`` session engine, async
views on `AsyncStore`, served by uvicorn) with ``--framework django``. They all come
with the ``test`` extra.

Without a DSN it starts a throw-away PostgreSQL (`ephemeral_postgres`). It creates the
table with the owner column (sessions per user; added to an existing table), prints
the URLs to open and what serves them, and serves until SIGINT (Ctrl-C) or SIGTERM;
then it stops the web server (uvicorn finishes the requests in flight), closes the
pool, stops PostgreSQL and deletes its files, and exits 0.

Starlette is the default because its shutdown is the cleanest: uvicorn runs in the
main thread and owns the signals while it serves, so it stops the way it stops
everywhere (stops accepting, closes idle keep-alive connections, waits for the
requests in flight, runs the app's lifespan exit, which closes the pool; a second
Ctrl-C forces it). werkzeug's development server handles no signals, so the demo
waits for one and shuts it down, and it abandons its in-flight request threads.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import signal
import socket
import sys
import threading
import time
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

logger = logging.getLogger(__name__)

#: The frameworks the demo can serve on, and the default.
FRAMEWORKS = ("starlette", "flask", "litestar", "aiohttp", "quart", "django")
DEFAULT_FRAMEWORK = "starlette"

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


# --------------------------------------------------------------------------- the servers

#: Serve the app on an already listening socket until a signal stops the server; call
#: ``ready(description)`` once it serves. Raise RuntimeError if it fails.
_Serve = Callable[[str, socket.socket, str, "str | None", "_Signals", Callable[[str], None]], None]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "(unknown version)"


def _serve_uvicorn(
    dsn: str,
    sock: socket.socket,
    table: str,
    schema: str | None,
    signals: _Signals,
    ready: Callable[[str], None],
) -> None:
    """The Starlette example on uvicorn, in the main thread: uvicorn owns the signals.

    While it serves, uvicorn's own handlers take SIGINT and SIGTERM: it stops
    accepting, closes idle keep-alive connections, gives the requests in flight
    ``_STOP_TIMEOUT`` seconds, runs the lifespan exit (which closes the pool), then
    raises the signal again, which lands in `signals`. A second Ctrl-C forces it.
    """
    from .examples.starlette_app import create_app

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, open=False, min_size=1, max_size=4, kwargs={"autocommit": True}
    )
    description = (
        f"uvicorn {_version('uvicorn')}, serving Starlette {_version('starlette')} "
        f"with starsessions {_version('starsessions')} on AsyncStore"
    )
    _uvicorn(create_app(pool, table=table, schema=schema), description, sock, signals, ready)


def _uvicorn(
    app: Any,
    description: str,
    sock: socket.socket,
    signals: _Signals,
    ready: Callable[[str], None],
) -> None:
    """Serve an ASGI app with uvicorn on `sock` until a signal stops it (see above)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                ready(description)

    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="info",
        timeout_graceful_shutdown=_STOP_TIMEOUT,
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


def _serve_litestar(
    dsn: str,
    sock: socket.socket,
    table: str,
    schema: str | None,
    signals: _Signals,
    ready: Callable[[str], None],
) -> None:
    """The Litestar example on uvicorn, in the main thread, as `_serve_uvicorn`.

    Litestar enters the example's `PostgresStore` with the app: its pool opens in
    the lifespan's startup and closes in its shutdown.
    """
    from .examples.litestar_app import create_app

    description = (
        f"uvicorn {_version('uvicorn')}, serving Litestar {_version('litestar')} "
        "with PostgresStore and SessionConfig on AsyncStore"
    )
    _uvicorn(create_app(dsn, table=table, schema=schema), description, sock, signals, ready)


def _serve_quart(
    dsn: str,
    sock: socket.socket,
    table: str,
    schema: str | None,
    signals: _Signals,
    ready: Callable[[str], None],
) -> None:
    """The Quart example on uvicorn, in the main thread, as `_serve_uvicorn`.

    The app's before/after serving hooks (run by uvicorn's lifespan) open and close
    the pool and the store.
    """
    from .examples.quart_app import create_app

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, open=False, min_size=1, max_size=4, kwargs={"autocommit": True}
    )
    description = (
        f"uvicorn {_version('uvicorn')}, serving Quart {_version('quart')} "
        "with PostgresSessionInterface on AsyncStore"
    )
    _uvicorn(create_app(pool, table=table, schema=schema), description, sock, signals, ready)


def _serve_aiohttp(
    dsn: str,
    sock: socket.socket,
    table: str,
    schema: str | None,
    signals: _Signals,
    ready: Callable[[str], None],
) -> None:
    """The aiohttp example on aiohttp's own server (AppRunner, SockSite), in the main thread.

    The main thread's event loop polls for a signal, then cleans the runner up: the
    site stops accepting, the requests in flight get ``_STOP_TIMEOUT`` seconds, and
    the app's cleanup_ctx closes the pool.
    """
    import asyncio
    import warnings

    from aiohttp import web

    from .examples.aiohttp_app import create_app

    # aiohttp-session 2.12 keys the request's storage by str, which aiohttp 3.14
    # warns about: not the demo user's business.
    warnings.filterwarnings("ignore", "It is recommended to use web.RequestKey", UserWarning)

    async def serve() -> None:
        runner = web.AppRunner(
            create_app(dsn, table=table, schema=schema), shutdown_timeout=_STOP_TIMEOUT
        )
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            ready(
                f"aiohttp {_version('aiohttp')} (AppRunner), with aiohttp-session "
                f"{_version('aiohttp-session')} and PostgresStorage on AsyncStore"
            )
            signals.serving()
            # The signal handler may only set attributes (see _Signals): poll them.
            while not signals.received:  # noqa: ASYNC110
                await asyncio.sleep(_POLL)
        finally:
            await runner.cleanup()

    asyncio.run(serve())


def _serve_django(
    dsn: str,
    sock: socket.socket,
    table: str,
    schema: str | None,
    signals: _Signals,
    ready: Callable[[str], None],
) -> None:
    """The Django example's ASGI application on uvicorn, in the main thread, as `_serve_uvicorn`.

    Django is configured in this process (once: the demo serves one app). The
    application is wrapped in `with_lifespan`, so uvicorn's lifespan shutdown closes
    the engine's pools.
    """
    from .examples.django_app import create_app

    description = (
        f"uvicorn {_version('uvicorn')}, serving Django {_version('django')} (async views) "
        "with the sessionstore session engine"
    )
    # Any Host header: the demo answers on whatever address it was told to listen on.
    app = create_app(dsn, asgi=True, table=table, schema=schema, allowed_hosts=["*"])
    _uvicorn(app, description, sock, signals, ready)


def _serve_werkzeug(
    dsn: str,
    sock: socket.socket,
    table: str,
    schema: str | None,
    signals: _Signals,
    ready: Callable[[str], None],
) -> None:
    """The Flask example on werkzeug's threaded development server, in a thread.

    werkzeug handles no signals, so the main thread waits for one and then shuts
    the server down; the store and pool are closed after it stopped.
    """
    from werkzeug.serving import make_server

    from .examples.flask_app import create_app

    with (
        ConnectionPool(dsn, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool,
        Store(pool, table=table, schema=schema, owners=True) as store,
    ):
        host, port = sock.getsockname()[:2]
        server = make_server(host, port, create_app(store), threaded=True, fd=sock.fileno())
        thread = threading.Thread(
            target=server.serve_forever, name="sessionstore-demo-werkzeug", daemon=True
        )
        try:
            thread.start()
            ready(
                f"werkzeug {_version('werkzeug')} (threaded), serving Flask "
                f"{_version('flask')} with PostgresSessionInterface on Store"
            )
            signals.serving()
            while not signals.wait(0.5):
                if not thread.is_alive():
                    raise RuntimeError("the web server stopped unexpectedly")
        finally:
            if thread.is_alive():
                server.shutdown()
                thread.join(_STOP_TIMEOUT)
            server.server_close()


_SERVERS: dict[str, _Serve] = {"starlette": _serve_uvicorn, "flask": _serve_werkzeug}
_TITLES = {"starlette": "Starlette", "flask": "Flask"}
_EXTRAS = {"starlette": ("starlette", "starsessions", "uvicorn"), "flask": ("flask", "werkzeug")}
_SERVERS["litestar"] = _serve_litestar
_TITLES["litestar"] = "Litestar"
_EXTRAS["litestar"] = ("litestar", "uvicorn")
_SERVERS["aiohttp"] = _serve_aiohttp
_TITLES["aiohttp"] = "aiohttp"
_EXTRAS["aiohttp"] = ("aiohttp", "aiohttp_session")
_SERVERS["quart"] = _serve_quart
_TITLES["quart"] = "Quart"
_EXTRAS["quart"] = ("quart", "uvicorn")
_SERVERS["django"] = _serve_django
_TITLES["django"] = "Django"
_EXTRAS["django"] = ("django", "uvicorn")


# --------------------------------------------------------------------------- signals


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the demo was starting."""


class _Signals:
    """SIGINT and SIGTERM handling: interrupt while starting, then just record.

    The handler only sets attributes (no locks: it runs between two bytecodes of the
    main thread, which may hold any lock), and the main loop polls them. While
    uvicorn serves, its own handlers replace these; it raises the signal again once
    it stopped, and that lands here.
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
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = self._dropped
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._unraisable

    def _dropped(self, unraisable: Any) -> None:
        """Keep quiet about an interrupt that landed where Python can't raise it.

        A signal can arrive while the main thread runs a weakref callback or a
        ``__del__``: the handler's `_Interrupted` is dropped there, with a traceback
        on stderr. `received` is set all the same, so `serving` raises it again.
        """
        if not isinstance(unraisable.exc_value, _Interrupted):
            self._unraisable(unraisable)

    def serving(self, on_signal: Callable[[], None] | None = None) -> None:
        """From now on a signal only asks the server to stop.

        Args:
            on_signal: Called from the handler on each signal (it must only set
                attributes); None when the main loop polls `received`.

        Raises:
            _Interrupted: If a signal arrived already.
        """
        self._raising = False
        self._on_signal = on_signal
        if self.received:
            raise _Interrupted

    def wait(self, timeout: float) -> bool:
        """Sleep until a signal arrived or `timeout` passed; tell whether one did."""
        deadline = time.monotonic() + timeout
        while not self.received and time.monotonic() < deadline:
            time.sleep(_POLL)
        return self.received

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        first = not self.received
        self.received = True
        if first:
            self.name = signal.Signals(signum).name
        if self._raising and first:
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
    """Serve the demo until SIGINT or SIGTERM, then clean everything up.

    Must run in the main thread (it handles the signals).

    Args:
        dsn: The server to keep sessions in; None to start a throw-away PostgreSQL.
        host: The address to listen on.
        port: The port to listen on.
        framework: One of `FRAMEWORKS`: ``"starlette"``, ``"flask"``, ``"litestar"``,
            ``"aiohttp"``, ``"quart"``, ``"django"``.
        table: The sessions table (created if missing).
        schema: The table's schema, or None for the search_path.
        out: Where to print what is served and where.

    Returns:
        0 once stopped by a signal.

    Raises:
        ValueError: If `framework` is unknown.
        RuntimeError: If a framework is not installed, the port is taken, the
            server cannot be reached or the web server fails to start.
        sessionstore.DatabaseError: If the table cannot be created.
    """
    if framework not in _SERVERS:
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
                say(f"sessionstore demo: the SCS example app on {_TITLES[framework]}")
                sock = _bind(host, port)  # first: a taken port fails before PostgreSQL starts
                stack.callback(sock.close)
                if dsn is None:
                    say("no --dsn and no $SESSIONSTORE_DSN: starting a throw-away PostgreSQL")
                    dsn = stack.enter_context(_throwaway_postgres(say))
                else:
                    say("PostgreSQL:  the server given by --dsn or $SESSIONSTORE_DSN")
                say(f"table:       {_create_table(dsn, table, schema)}")
                netloc = _netloc(host, sock.getsockname()[1])

                def ready(description: str) -> None:
                    say(f"web server:  {description}")
                    say()
                    say(
                        "Open in a browser, or with curl and a cookie jar (curl -b jar -c jar URL):"
                    )
                    for path, what in _routes(app_module.MESSAGE):
                        say(f"  http://{netloc}{path:<18} {what}")
                    say()
                    say("Press Ctrl-C to stop.")

                _SERVERS[framework](dsn, sock, table, schema, signals, ready)
                say(f"\n{signals.name}: the web server stopped")
        except _Interrupted:
            say(f"\n{signals.name or 'interrupted'}: stopped while starting")
    say("stopped: nothing left running" + (", temporary files deleted" if throwaway else ""))
    return 0


def _check_installed(framework: str) -> None:
    for module in _EXTRAS[framework]:
        try:
            __import__(module)
        except ImportError as exc:
            extra = framework  # each framework's extra is named after it
            hint = '"sessionstore[test]"' if module == "uvicorn" else f'"sessionstore[{extra}]"'
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
