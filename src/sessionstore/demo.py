"""``python -m sessionstore demo``: the SCS README's example app, served for a browser.

The app is the one in ``examples/``: ``/put`` stores "Hello from a session!" in the
session, ``/get`` reads it back, ``/login`` renews the session's token and ``/logout``
deletes the session; ``/`` lists them. It runs on Starlette (starsessions and
`AsyncStore`, served by uvicorn) by default, or on Flask (`Store`, served by werkzeug)
with ``--framework flask``. Both frameworks come with the ``test`` extra.

Without a DSN it starts a throw-away PostgreSQL (`ephemeral_postgres`). It creates the
table, prints the URLs to open and what serves them, and serves until SIGINT (Ctrl-C)
or SIGTERM; then it stops the web server (uvicorn finishes the requests in flight),
closes the pool, stops PostgreSQL and deletes its files, and exits 0.

Starlette is the default because its shutdown is the cleanest: uvicorn stops
accepting, closes idle keep-alive connections, waits for the requests in flight and
runs the app's lifespan exit, which closes the pool; werkzeug's development server
abandons its in-flight request threads.
"""

from __future__ import annotations

import contextlib
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
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ._oneshot import create_table
from .store import Store
from .store_async import AsyncStore

if TYPE_CHECKING:
    import flask
    from starlette.applications import Starlette

__all__ = ["DEFAULT_FRAMEWORK", "FRAMEWORKS", "MESSAGE", "flask_app", "run", "starlette_app"]

logger = logging.getLogger(__name__)

#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"
#: The frameworks the demo can serve on, and the default.
FRAMEWORKS = ("starlette", "flask")
DEFAULT_FRAMEWORK = "starlette"

_CONNECT_TIMEOUT = 10
_START_TIMEOUT = 30.0  # the web server must be listening by then
_STOP_TIMEOUT = 10.0  # requests in flight get this long to finish
_POLL = 0.05
_ROUTES = (
    ("/put", f'stores "{MESSAGE}" in your session'),
    ("/get", "shows what the session holds"),
    ("/login", "renews the session's token (the data stays, the old token dies)"),
    ("/logout", "deletes the session (its row and its cookie)"),
)


def _index_text() -> str:
    lines = ["sessionstore demo: sessions in PostgreSQL", ""]
    lines += [f"{path:<8} {what}" for path, what in _ROUTES]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the apps


def flask_app(store: Store) -> flask.Flask:
    """Build the example app on Flask, with `PostgresSessionInterface` on `store`.

    Args:
        store: The store for the sessions.

    Returns:
        The Flask app.

    Raises:
        ImportError: If the ``flask`` extra is not installed.
    """
    from flask import Flask, session

    from .integrations.flask import PostgresSessionInterface, renew_token

    app = Flask("sessionstore.demo")
    app.session_interface = PostgresSessionInterface(store)

    def text(body: str) -> tuple[str, int, dict[str, str]]:
        return body, 200, {"Content-Type": "text/plain; charset=utf-8"}

    @app.get("/")
    def index() -> tuple[str, int, dict[str, str]]:
        return text(_index_text())

    @app.get("/put")
    def put() -> tuple[str, int, dict[str, str]]:
        session.permanent = True  # a cookie that outlives the browser, as SCS's
        session["message"] = MESSAGE
        return text("Stored a message in your session.\n")

    @app.get("/get")
    def get() -> tuple[str, int, dict[str, str]]:
        return text(str(session.get("message", "")) + "\n")

    @app.get("/login")
    def login() -> tuple[str, int, dict[str, str]]:
        renew_token()
        session["user"] = "alice"
        return text("Logged in; your session has a new token.\n")

    @app.get("/logout")
    def logout() -> tuple[str, int, dict[str, str]]:
        session.clear()
        return text("Logged out; your session is gone.\n")

    return app


def starlette_app(pool: AsyncConnectionPool[Any], store: AsyncStore) -> Starlette:
    """Build the example app on Starlette, with starsessions and `PostgresStore`.

    The app's lifespan opens `pool`, starts the store's cleanup task, and closes
    both when the server stops.

    Args:
        pool: The store's pool, not yet opened.
        store: The store for the sessions.

    Returns:
        The Starlette app.

    Raises:
        ImportError: If the ``starlette`` extra is not installed.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware

    from .integrations.starlette import PostgresStore, renew_token

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async with pool, store:
            yield

    async def index(request: Request) -> PlainTextResponse:
        return PlainTextResponse(_index_text())

    async def put(request: Request) -> PlainTextResponse:
        request.session["message"] = MESSAGE
        return PlainTextResponse("Stored a message in your session.\n")

    async def get(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("message", "")) + "\n")

    async def login(request: Request) -> PlainTextResponse:
        await renew_token(request)
        request.session["user"] = "alice"
        return PlainTextResponse("Logged in; your session has a new token.\n")

    async def logout(request: Request) -> PlainTextResponse:
        request.session.clear()
        return PlainTextResponse("Logged out; your session is gone.\n")

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", index),
            Route("/put", put),
            Route("/get", get),
            Route("/login", login),
            Route("/logout", logout),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=PostgresStore(store),
                lifetime=24 * 3600,  # SCS's default Lifetime
                cookie_https_only=False,  # served on plain http://127.0.0.1
            ),
            Middleware(SessionAutoloadMiddleware),
        ],
    )


# --------------------------------------------------------------------------- the servers


class _Server(Protocol):
    """A web server running in a background thread."""

    description: str

    def start(self) -> None: ...

    def running(self) -> bool: ...

    def stop(self) -> None: ...


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "(unknown version)"


class _UvicornServer:
    """The Starlette app on uvicorn, in a thread (uvicorn leaves signals to us there)."""

    def __init__(self, dsn: str, sock: socket.socket, table: str, schema: str | None) -> None:
        import uvicorn

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, open=False, min_size=1, max_size=4, kwargs={"autocommit": True}
        )
        store = AsyncStore(pool, table=table, schema=schema)
        config = uvicorn.Config(starlette_app(pool, store), lifespan="on", log_level="info")
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="sessionstore-demo-uvicorn",
            daemon=True,  # a server that ignores the stop bounds must not block the exit
        )
        self.description = (
            f"uvicorn {_version('uvicorn')}, serving Starlette {_version('starlette')} "
            f"with starsessions {_version('starsessions')} on AsyncStore"
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn failed to start (see its log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within {_START_TIMEOUT:.0f} s")
            time.sleep(_POLL)

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive():
                logger.warning("requests still running after %.0f s: closing them", _STOP_TIMEOUT)
                self._server.force_exit = True
                self._thread.join(_STOP_TIMEOUT)
        self._sock.close()


class _WerkzeugServer:
    """The Flask app on werkzeug's threaded development server, in a thread."""

    def __init__(self, dsn: str, sock: socket.socket, table: str, schema: str | None) -> None:
        from werkzeug.serving import make_server

        self._pool: ConnectionPool[Any] = ConnectionPool(
            dsn, open=True, min_size=1, max_size=4, kwargs={"autocommit": True}
        )
        try:
            self._store = Store(self._pool, table=table, schema=schema)
            host, port = sock.getsockname()[:2]
            self._server = make_server(
                host, port, flask_app(self._store), threaded=True, fd=sock.fileno()
            )
        except BaseException:
            self._pool.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sessionstore-demo-werkzeug", daemon=True
        )
        self.description = (
            f"werkzeug {_version('werkzeug')} (threaded), serving Flask "
            f"{_version('flask')} with PostgresSessionInterface on Store"
        )

    def start(self) -> None:
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(_STOP_TIMEOUT)
        self._server.server_close()
        self._sock.close()
        self._store.close()
        self._pool.close()


_SERVERS: dict[str, Callable[[str, socket.socket, str, str | None], _Server]] = {
    "starlette": _UvicornServer,
    "flask": _WerkzeugServer,
}
_TITLES = {"starlette": "Starlette", "flask": "Flask"}
_EXTRAS = {"starlette": ("starlette", "starsessions", "uvicorn"), "flask": ("flask", "werkzeug")}


# --------------------------------------------------------------------------- signals


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the demo was starting."""


class _Signals:
    """SIGINT and SIGTERM handling: interrupt while starting, then just record.

    The handler only sets attributes (no locks: it runs between two bytecodes of the
    main thread, which may hold any lock), and the main loop polls them.
    """

    def __init__(self) -> None:
        self.received = False
        self.name = ""
        self._raising = True
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def serving(self) -> None:
        """From now on a signal only asks the main loop to stop."""
        self._raising = False
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
        framework: ``"starlette"`` or ``"flask"``.
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
                server = _SERVERS[framework](dsn, sock, table, schema)
                stack.callback(_stop, server, say)
                server.start()
                say(f"web server:  {server.description}")
                say()
                say("Open in a browser, or with curl and a cookie jar (curl -b jar -c jar URL):")
                netloc = _netloc(host, sock.getsockname()[1])
                for path, what in _ROUTES:
                    say(f"  http://{netloc}{path:<8} {what}")
                say()
                say("Press Ctrl-C to stop.")
                signals.serving()
                while not signals.wait(0.5):
                    if not server.running():
                        raise RuntimeError("the web server stopped unexpectedly")
                say(f"\n{signals.name}: stopping")
        except _Interrupted:
            say(f"\n{signals.name or 'interrupted'}: stopped while starting")
    say("stopped: nothing left running" + (", temporary files deleted" if throwaway else ""))
    return 0


def _check_installed(framework: str) -> None:
    for module in _EXTRAS[framework]:
        try:
            __import__(module)
        except ImportError as exc:
            extra = "flask" if framework == "flask" else "starlette"
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
    name, created = create_table(dsn, table, schema, connect_timeout=_CONNECT_TIMEOUT)
    return f"{name} ({'created' if created else 'already there'})"


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


def _stop(server: _Server, say: Callable[[str], None]) -> None:
    say("stopping the web server")
    server.stop()
