"""`ephemeral_postgres` and the `PostgresServer` it yields (docs/testing.md).

The work is done beside: `._binaries` finds the binaries, `._account` names the account
a root process runs the server as, `._instance` runs the server's process. POSIX only.
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
        user: A superuser for servers started here.
        password: None for servers started here (trust authentication).
        source: Where it came from, e.g. ``"PostgreSQL 15 binaries in /usr/lib/postgresql/15/bin"``
            or ``"SESSIONSTORE_DSN from the environment"``.
        raw_dsn: The DSN as given, for a server named by an environment variable; else None.
        bindir: The install the server was started from, as found (never the private
            copy the unprivileged account may run); None for a server named by a DSN.
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
        return make_conninfo(  # a None password is left out
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.dbname,
            password=self.password,
        )

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

        Args:
            downtime: Seconds to stay down between the stop and the start.
            immediate: Stop as a crash would (``SIGQUIT``, then crash recovery) instead
                of a fast shutdown (``SIGINT``); unless ``durable``, the latest commits
                may be lost.
            crash: Kill the postmaster with ``SIGKILL`` (see `crash`); overrides ``immediate``.

        Raises:
            RuntimeError: If the server was not started here (see `restartable`),
                is no longer running, or did not come back.
        """
        with self.stopped(immediate=immediate, crash=crash):
            if downtime > 0:
                time.sleep(downtime)

    @contextlib.contextmanager
    def stopped(self, *, immediate: bool = False, crash: bool = False) -> Iterator[None]:
        """Stop the server for a ``with`` block and start it again, even on errors; as `restart`."""
        self._require_instance().pause(immediate=immediate, crash=crash)
        try:
            yield
        finally:
            self._require_instance().resume()

    def crash(self) -> None:
        """Kill the postmaster with ``SIGKILL`` and leave the server down (for failover tests).

        This returns once its orphaned backends are gone too.

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
    """The program ``name`` (``"pgbench"``) of the install ``server`` runs from, not ``PATH``'s.

    It is in `PostgresServer.bindir`, meant to run as the current user; it is not run here.

    Returns:
        Its path; None for a server named by a DSN, or if the install has no such program.

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

    The throw-away one (docs/testing.md#which-server) is stopped and deleted on leaving the
    block, or at the interpreter's exit.

    Args:
        env_var: Environment variable that may hold the DSN of a running server to use
            instead; None to always start one.
        durable: Keep PostgreSQL's crash safety. By default ``fsync``,
            ``synchronous_commit`` and ``full_page_writes`` are off and ``initdb`` runs
            with ``--no-sync``.
        settings: Server settings (``-c name=value``) added to or overriding the defaults
            (``max_connections=200`` and the non-durable ones); not ``port``,
            ``listen_addresses`` or ``unix_socket_directories``.
        bindir: Directory holding ``initdb`` and ``postgres``, instead of searching with
            `find_postgres_bindir`.
        startup_timeout: Seconds to wait for the server to accept connections.

    Yields:
        Where to connect.

    Raises:
        PostgresNotFoundError: No binaries were found (or ``bindir`` lacks them).
        RuntimeError: initdb failed, or the server did not start (with the end of its log).
        ValueError: ``settings`` names a managed setting.
    """
    if env_var and (dsn := os.environ.get(env_var)):
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
