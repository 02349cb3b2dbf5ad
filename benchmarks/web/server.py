"""Start, check and stop the server process of one measurement."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from ..noise import descendants
from .apps import AppConfig
from .contenders import WebContender

#: The repository's root: ``python -m benchmarks.web.serve`` runs from there.
ROOT = Path(__file__).resolve().parents[2]

#: How long a server may take to answer its first request (imports, pool opening).
START_TIMEOUT = 60.0
#: How long a graceful stop may take before the group is killed.
STOP_TIMEOUT = 20.0


def child_env() -> dict[str, str]:
    """The environment of a child ``python -m benchmarks.web...``: the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class ServerError(RuntimeError):
    """The server process failed to start, died, or left processes behind."""


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, from /proc."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        # state, ppid, pgrp: fields 3-5 of proc(5), 0-2 after the command.
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


class WebServer:
    """The server process of one contender, as a context manager."""

    def __init__(self, contender: WebContender, config: AppConfig) -> None:
        self.contender = contender
        self.config = config
        self.port = 0
        self.pid = 0
        #: Every process the server had when it was stopped (master and workers).
        self.processes: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None

    def __enter__(self) -> WebServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait for its first answer."""
        self._dir = tempfile.TemporaryDirectory(prefix="sessionstore-webbench-")
        workdir = Path(self._dir.name)
        self._log = workdir / "server.log"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            self.port = sock.getsockname()[1]
            c = self.config
            command = [
                sys.executable,
                "-m",
                "benchmarks.web.serve",
                self.contender.key,
                f"--fd={sock.fileno()}",
                f"--dsn={c.dsn}",
                f"--table={c.table}",
                f"--pool={c.pool}",
                f"--threads={c.threads}",
                f"--workdir={workdir}",
            ]
            if c.redis_url is not None:
                command.append(f"--redis-url={c.redis_url}")
            with self._log.open("wb") as log:
                self._proc = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(sock.fileno(),),
                    start_new_session=True,
                )
            self.pid = self._proc.pid
        finally:
            sock.close()  # the child's copy is the only one now
        self._wait_ready()

    def _wait_ready(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=START_TIMEOUT)
        try:
            conn.request("GET", "/ping")
            reply = conn.getresponse()
            body = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(
                f"{self.contender.key}: the server did not answer ({exc!r}){self._tail()}"
            ) from exc
        finally:
            conn.close()
        if reply.status != 200 or body != b"pong":
            raise ServerError(
                f"{self.contender.key}: GET /ping answered {reply.status} {body[:200]!r}"
                + self._tail()
            )

    def _tail(self, proc: subprocess.Popen[bytes] | None = None) -> str:
        proc = proc or self._proc
        code = None if proc is None else proc.poll()
        text = ""
        if self._log is not None and self._log.exists():
            text = self._log.read_text(errors="replace")[-3000:]
        status = "" if code is None else f"; it exited with {code}"
        return f"{status}; its output:\n{text}" if text else status

    def stop(self) -> None:
        """Stop the server gracefully (or kill it), and check that nothing is left."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                self.processes = [proc.pid, *sorted(descendants(proc.pid))]
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise ServerError(
                        f"{self.contender.key}: the server did not stop within "
                        f"{STOP_TIMEOUT:g} s of SIGTERM (its group was killed){self._tail(proc)}"
                    ) from None
                left = group_members(proc.pid)
                if left:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    raise ServerError(
                        f"{self.contender.key}: processes {left} of the server were left "
                        "behind (killed now)"
                    )
        finally:
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None
