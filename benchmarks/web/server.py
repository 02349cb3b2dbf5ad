"""Start, check and stop the server process of one measurement, and the redis-server."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..noise import descendants, proc_stat
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
    # state and pgrp: fields 3 and 5 of proc(5), 0 and 2 after the command.
    stats = ((int(e), proc_stat(int(e))) for e in os.listdir("/proc") if e.isdigit())
    return [pid for pid, f in stats if f is not None and f[0] != "Z" and int(f[2]) == pgid]


def stop(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM `proc`, and SIGKILL its process group if it has not exited within
    `timeout`; return whether it stopped in time."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


@dataclasses.dataclass
class WebServer:
    """A running server: its port, its process, and every process it had when stopped."""

    port: int
    pid: int
    processes: list[int] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def serving(contender: WebContender, config: AppConfig) -> Iterator[WebServer]:
    """Serve `contender` in a process of its own on a socket bound here, from its first
    answer to ``GET /ping`` to the end of the block; then stop it and check that none of
    its processes is left."""
    with tempfile.TemporaryDirectory(prefix="sessionstore-webbench-") as workdir:
        log = Path(workdir) / "server.log"
        with socket.socket() as sock:  # the child's copy is the only one after the block
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            settings = json.dumps(dataclasses.asdict(dataclasses.replace(config, workdir=workdir)))
            command = [sys.executable, "-m", "benchmarks.web.serve", contender.key]
            command += [f"--fd={sock.fileno()}", f"--config={settings}"]
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(sock.fileno(),),
                    start_new_session=True,
                )
            server = WebServer(sock.getsockname()[1], proc.pid)
        try:
            _wait_ready(contender, server.port, proc, log)
            yield server
        finally:
            server.processes = [proc.pid, *sorted(descendants(proc.pid))]
            if not stop(proc, STOP_TIMEOUT):
                raise ServerError(
                    f"{contender.key}: the server did not stop within {STOP_TIMEOUT:g} s of "
                    f"SIGTERM (its group was killed){_tail(proc, log)}"
                )
            left = group_members(proc.pid)
            if left:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise ServerError(
                    f"{contender.key}: processes {left} of the server were left behind (killed now)"
                )


def _wait_ready(
    contender: WebContender, port: int, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Wait for the server's answer to ``GET /ping`` (it is ``pong``, or ServerError)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=START_TIMEOUT)
    try:
        conn.request("GET", "/ping")
        reply = conn.getresponse()
        body = reply.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ServerError(
            f"{contender.key}: the server did not answer ({exc!r}){_tail(proc, log)}"
        ) from exc
    finally:
        conn.close()
    if reply.status != 200 or body != b"pong":
        raise ServerError(
            f"{contender.key}: GET /ping answered {reply.status} {body[:200]!r}{_tail(proc, log)}"
        )


def _tail(proc: subprocess.Popen[bytes], log: Path) -> str:
    """How the server exited, if it did, and the end of its output."""
    code = proc.poll()
    text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    status = "" if code is None else f"; it exited with {code}"
    return f"{status}; its output:\n{text}" if text else status
