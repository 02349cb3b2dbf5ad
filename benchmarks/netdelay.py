"""Network mode: a delaying TCP proxy, in a process of its own, in front of the server.

``python -m benchmarks --delay-ms D`` measures every contender, pgbench included,
through a proxy that forwards each chunk D ms after it arrived, in each direction,
so a round trip costs at least 2 D more, as on a real network. The proxy runs in a
child process (``python -m benchmarks.netdelay``), never in a thread of the
benchmark: it would share the GIL and the CPU time with the contenders it delays.
Its CPU time is measured like the server's (`benchmarks.noise.Probe`) and printed
with the run's noise.

The child is not `sessionstore.testing.TcpProxy` (whose ``delay`` mode does the same
with two tasks, a queue and a sleep per chunk per direction, and switchable modes
the benchmark does not need): measured in the quick run, it cost ~120 µs of CPU per
find, which at 0.5 ms and 64 callers would take most of a core of a 2-core machine
from the contenders. Here each direction is an `asyncio.Protocol` holding a FIFO of
(due, chunk) and one timer, and the loop runs on `select` rather than `epoll`:
epoll's timeout has millisecond resolution (a 0.5 ms delay would take 1 ms),
select's has microseconds, and the proxy has a few dozen sockets.

The child prints its port on stdout once it listens and runs until its stdin closes,
so it also ends when the benchmark dies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import selectors
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: Seconds to wait for the child to stop once asked before killing it.
_STOP_TIMEOUT = 10.0


class DelayProxy:
    """The proxy process in front of the server of `dsn`, adding `delay_ms` each way.

    Args:
        dsn: The server's DSN (its host must be a TCP address).
        delay_ms: Milliseconds added in each direction (0: a plain forwarder).

    Attributes:
        dsn: The DSN that connects through the proxy (once started).
        pid: The proxy process's pid (once started).
    """

    def __init__(self, dsn: str, delay_ms: float) -> None:
        params = conninfo_to_dict(dsn)
        host = str(params.get("hostaddr") or params.get("host") or "")
        if not host or host.startswith("/") or "," in host:
            raise ValueError(
                f"network mode needs the server's TCP address in the DSN, not {host or 'none'!r}"
            )
        self._params = params
        self._target = (host, int(params.get("port") or 5432))
        self.delay_ms = delay_ms
        self.dsn = ""
        self.pid = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> DelayProxy:
        """Start the proxy process and wait until it listens.

        Raises:
            RuntimeError: The process did not start listening.
        """
        root = Path(__file__).resolve().parents[1]
        self._proc = proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.netdelay",
                self._target[0],
                str(self._target[1]),
                str(self.delay_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the delaying proxy did not start (it said {line!r})")
        self.pid = proc.pid
        params = dict(self._params)
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=line)
        self.dsn = make_conninfo("", **params)
        return self

    def close(self) -> None:
        """Stop the proxy process (closing its stdin asks it to) and reap it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it receives goes to its peer, delayed."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        #: Chunks received and not yet forwarded, oldest first; None is the end.
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._push(data)

    def eof_received(self) -> bool:
        self._push(None)
        return True  # keep our side open until the peer has had everything

    def connection_lost(self, exc: Exception | None) -> None:
        self._push(None)

    def pause_writing(self) -> None:  # the peer is slow: stop reading what we'd send it
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def _push(self, data: bytes | None) -> None:
        if self.queue and self.queue[-1][1] is None:
            return  # already ended
        self.queue.append((self.loop.time() + self.delay, data))
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        peer = self.peer.transport if self.peer is not None else None
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if peer is None or peer.is_closing():
                continue
            if data is None:
                peer.close()
                if self.transport is not None:
                    self.transport.close()
            else:
                peer.write(data)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)


async def _serve(host: str, port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()

    class Client(_Side):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            assert self.transport is not None
            self.transport.pause_reading()  # until the upstream is connected
            task = loop.create_task(self._connect())
            connecting.add(task)
            task.add_done_callback(connecting.discard)

        async def _connect(self) -> None:
            assert self.transport is not None
            try:
                _, upstream = await loop.create_connection(lambda: _Side(delay), host, port)
            except OSError:
                self.transport.abort()
                return
            upstream.peer, self.peer = self, upstream
            self.transport.resume_reading()

    server = await loop.create_server(lambda: Client(delay), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Until the benchmark closes our stdin (or dies): read it in a thread.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The child: run the proxy until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.netdelay")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("delay_ms", type=float)
    args = parser.parse_args(argv)
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    # A terminal's Ctrl-C reaches the whole process group: stop quietly then too.
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_until_complete(_serve(args.host, args.port, args.delay_ms / 1000))
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
