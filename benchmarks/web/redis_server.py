"""The Redis server of the web benchmark's Redis contenders: started and stopped here."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .server import stop

#: Where Debian puts it, for a PATH without /usr/bin.
DEBIAN_PATH = Path("/usr/bin/redis-server")
INSTALL_HINT = "apt-get install -y redis-server"
#: How long it may take to answer PING after starting.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: A port taken between choosing it and binding it: try again this often.
PORT_ATTEMPTS = 5


class RedisError(RuntimeError):
    """redis-server is missing, or did not start or stop."""


def find_redis_server() -> str:
    """The redis-server binary."""
    found = shutil.which("redis-server") or (str(DEBIAN_PATH) if DEBIAN_PATH.exists() else None)
    if found is None:
        raise RedisError(
            "redis-server not found: the Redis contenders need it; install it with "
            f"`{INSTALL_HINT}` (as root), or leave them out with --stores"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server: `start`, `preload`, `stop`."""

    def __init__(self) -> None:
        self.binary = find_redis_server()
        self.port = 0
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The URL the apps connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        self.version = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self._dir = tempfile.TemporaryDirectory(prefix="sessionstore-webbench-redis-")
        log = Path(self._dir.name) / "redis.log"
        for _ in range(PORT_ATTEMPTS):
            self.port = _free_port()
            args = f"--port {self.port} --bind 127.0.0.1 --appendonly no --daemonize no".split()
            args += ["--save", "", "--dir", self._dir.name, "--logfile", str(log)]
            self._proc = subprocess.Popen(
                [self.binary, *args],
                cwd=self._dir.name,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C to the benchmark reaches it through stop().
                start_new_session=True,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while self._proc.poll() is None and time.monotonic() < deadline:
                if _ping(self.port):
                    return
                time.sleep(0.05)
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            stop(self._proc, STOP_TIMEOUT)
            if "Address already in use" not in text:
                raise RedisError(f"redis-server did not start on port {self.port}:\n{text}")
        raise RedisError(f"redis-server found no free port in {PORT_ATTEMPTS} attempts")

    def preload(self, rows: int, payload: int) -> None:
        """Store `rows` keys of `payload` bytes each, as the sessions tables hold."""
        import redis

        with redis.Redis.from_url(self.url) as client:
            for first in range(0, rows, 10_000):
                keys = range(first, min(rows, first + 10_000))
                client.mset({f"preload:{i}": b"x" * payload for i in keys})

    def stop(self) -> None:
        """Stop it (SIGTERM: it has nothing to save) and remove its directory."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                stop(proc, STOP_TIMEOUT)
        finally:
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None
