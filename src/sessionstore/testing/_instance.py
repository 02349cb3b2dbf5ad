"""`_Instance`: one throw-away server's directory and process, from ``initdb`` to deletion."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from ._account import _account_tmpdir, _run_as_kwargs, _unprivileged_account
from ._binaries import _output, _same_dir, _usable_bindir

logger = logging.getLogger("sessionstore.testing")

_HOST = "127.0.0.1"
_SUPERUSER = "postgres"
_DBNAME = "postgres"
_PORT_ATTEMPTS = 5
_INITDB_TIMEOUT = 300.0
_STOP_TIMEOUT = 15.0
_KILL_TIMEOUT = 5.0
_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 40
_PORT_IN_USE_MARKERS = ("Address already in use", "could not create any TCP/IP sockets")
#: How long orphaned backends get to notice their postmaster died before they are killed.
_ORPHAN_TIMEOUT = 10.0
# Where every process can be found by its working directory (the data directory).
_PROC_CWD = sys.platform.startswith("linux") and os.path.isdir("/proc")


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
        self.bindir = bindir
        self.source = source
        self.durable = durable
        self.settings = dict(settings)
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

    @property
    def port(self) -> int | None:
        """The port it listens on, once started."""
        return self._port

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> int:
        """Create the cluster and start the server; return its port."""
        started = time.monotonic()
        self._tmpdir = tmpdir = _account_tmpdir(self._account, "sessionstore-pg-")
        bindir = _usable_bindir(self.bindir, tmpdir, self._account, self._subprocess_kwargs())
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
                    self.source,
                    initdb_done - started,
                    time.monotonic() - initdb_done,
                    datadir,
                )
                return port
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
        return {"env": self._env, "cwd": self._tmpdir, **_run_as_kwargs(self._account)}

    def _initdb(self, bindir: Path, datadir: Path) -> None:
        cmd = [str(bindir / "initdb"), "-D", str(datadir), "-U", _SUPERUSER, "--auth=trust"]
        cmd += ["-E", "UTF8", "--locale=C"]
        if not self.durable:
            cmd.append("--no-sync")
        self._run_setup("initdb", cmd)

    def _run_setup(self, name: str, cmd: list[str]) -> None:
        """Run a program that prepares the data directory, as the server's account."""
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
                f"{name} failed with exit code {result.returncode}:\n"
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
            **self.settings,
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


def kill_postmaster(proc: subprocess.Popen[bytes], datadir: Path) -> None:
    """Kill a postmaster with ``SIGKILL`` and wait until its backends are gone too.

    Backends notice their postmaster died and exit on their own, mostly within
    milliseconds; a new postmaster refuses to start while any holds the old shared
    memory, so this waits, and kills those still there after `_ORPHAN_TIMEOUT`.
    ``datadir`` is the working directory of all its processes.
    """
    children = _children(proc.pid)
    logger.info("Killing PostgreSQL's postmaster (pid %d) with SIGKILL", proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(timeout=_KILL_TIMEOUT)
    killed = time.monotonic()
    deadline = killed + _ORPHAN_TIMEOUT
    while alive := _survivors(children, datadir):
        if time.monotonic() > deadline:
            logger.warning(
                "PostgreSQL backends %s outlived their postmaster by %.0f s; killing them",
                sorted(alive),
                _ORPHAN_TIMEOUT,
            )
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + _KILL_TIMEOUT
        time.sleep(_POLL_INTERVAL)
    logger.info("PostgreSQL's processes all gone %.2f s after the kill", time.monotonic() - killed)


# --------------------------------------------------------------------------- helpers


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


def _pidfile_ready(datadir: Path, elapsed: float) -> bool:
    """Whether postmaster.pid says the server accepts connections.

    PostgreSQL 10+ writes "ready" on its 8th line once listening (before, connecting could
    reach another server on the port); older ones write no status: connect after 3 s.
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
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.2)
    logger.warning("Could not delete %s", path)


def _children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (best effort: for systems without ``/proc``)."""
    if _PROC_CWD:
        return set()  # _survivors finds them by working directory, also once orphaned
    rows = (line.split() for line in _output("ps", "-A", "-o", "pid=,ppid=").splitlines())
    return {int(row[0]) for row in rows if len(row) == 2 and row[1] == str(pid)}


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # gone, a zombie, or not ours to look at
        return None


def _survivors(children: set[int], datadir: Path) -> set[int]:
    """The processes of a killed postmaster still alive."""
    if _PROC_CWD:
        # Every PostgreSQL process runs in its data directory; orphans are reparented,
        # so their parent pid no longer tells.
        target = str(datadir.resolve())
        pids = (int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit())
        return {pid for pid in pids if _cwd(pid) == target}
    alive = set()
    for pid in children:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.add(pid)
    return alive
