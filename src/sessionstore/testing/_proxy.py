"""`TcpProxy`: a TCP forwarder whose network can be slowed, silenced or cut at run time.

Its modes are described in docs/testing.md#outage-tests. It runs an asyncio loop in a
daemon thread of its own, so it serves sync and async clients alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["ModeName", "ProxyMode", "ProxyStats", "TcpProxy"]

_T = TypeVar("_T")

#: The proxy's modes.
ModeName = Literal["pass", "delay", "blackhole", "reset"]

_CHUNK = 64 * 1024
_START_TIMEOUT = 10.0
_CALL_TIMEOUT = 10.0
_NOT_STARTED = "the proxy is not started; use `with TcpProxy(...)` or start()"
#: SO_LINGER on, with a zero timeout: close() sends RST instead of FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass(frozen=True, slots=True)
class ProxyMode:
    """What the proxy does to the bytes it carries: its mode, and ``delay``'s added latency."""

    name: ModeName
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Connections the proxy accepted, has open now, and closed with a RST, since it started."""

    accepted: int
    open: int
    reset: int


class _Link:
    """One proxied connection: a client socket, an upstream socket, two pumps."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def close(self, *, rst: bool = False) -> None:
        """Close both sockets, with a RST if `rst`; idempotent."""
        if self.closed:
            return
        self.closed = True
        close = _abort_with_rst if rst else asyncio.StreamWriter.close
        for writer in (self.client, self.upstream):
            if writer is not None:
                close(writer)
        for task in self.tasks:
            task.cancel()


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class TcpProxy:
    """A TCP forwarder to ``target_host:target_port``, its network switchable at run time.

    ``listen_port=0`` picks a free port.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._listen = (listen_host, listen_port)
        self._address: tuple[str, int] | None = None
        self._mode = ProxyMode("pass")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self._accepted = 0
        self._reset = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> TcpProxy:
        """Start listening (in a thread of its own) and return the proxy; idempotent.

        Raises:
            RuntimeError: If the proxy could not start listening.
        """
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            self._loop = loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to start() below
                failure.append(exc)
            ready.set()
            try:
                if not failure:
                    loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="sessionstore-tcp-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(_START_TIMEOUT) or failure:
            self._thread = None
            raise RuntimeError(f"the TCP proxy could not start: {failure[:1]}")
        return self

    def close(self) -> None:
        """Stop listening and close every connection; idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already gone
            self._call(self._shutdown())
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_CALL_TIMEOUT)
        self._thread = None
        self._loop = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "not started" if self._address is None else f"{self.host}:{self.port}"
        return f"<TcpProxy {where} -> {self.target_host}:{self.target_port} mode={self._mode.name}>"

    # ------------------------------------------------------------------ where

    @property
    def host(self) -> str:
        """The address the proxy listens on."""
        return self._require_address()[0]

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return self._require_address()[1]

    def dsn(self, dsn: str) -> str:
        """`dsn` (a conninfo string or URL) with the proxy's host and port, ``hostaddr`` dropped."""
        params = conninfo_to_dict(dsn)
        params.pop("hostaddr", None)
        params.update(host=self.host, port=str(self.port))
        return make_conninfo("", **params)

    # ------------------------------------------------------------------ modes

    @property
    def mode(self) -> ProxyMode:
        """The current mode."""
        return self._mode

    @property
    def stats(self) -> ProxyStats:
        """What the proxy has done so far."""
        return ProxyStats(accepted=self._accepted, open=len(self._links), reset=self._reset)

    def passthrough(self) -> None:
        """Forward everything as it comes (and deliver what a blackhole held)."""
        self._call(self._apply_mode(ProxyMode("pass")))

    def delay(self, seconds: float) -> None:
        """Forward every chunk `seconds` late, in each direction (the added one-way latency).

        Raises:
            ValueError: If `seconds` is negative or not finite.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {seconds}")
        self._call(self._apply_mode(ProxyMode("delay", float(seconds))))

    def blackhole(self) -> None:
        """Keep every connection, accept new ones, and forward nothing until further notice."""
        self._call(self._apply_mode(ProxyMode("blackhole")))

    def reset(self) -> None:
        """Reset every open connection, and every new one as soon as it is accepted."""
        self._call(self._apply_mode(ProxyMode("reset")))

    def reset_connections(self) -> int:
        """Reset the connections open now, once, and return how many; the mode stays."""
        return self._call(self._reset_all())

    # ------------------------------------------------------------------ internals

    def _require_address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError(_NOT_STARTED)
        return self._address

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine on the proxy's loop and wait for its result."""
        loop = self._loop
        if loop is None or self._thread is None:
            coro.close()
            raise RuntimeError(_NOT_STARTED)
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_CALL_TIMEOUT)

    async def _apply_mode(self, mode: ProxyMode) -> None:
        assert self._flowing is not None
        self._mode = mode
        if mode.name == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode.name == "reset":
            await self._reset_all()

    async def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            link.close(rst=True)
        self._links.difference_update(links)
        self._reset += len(links)
        return len(links)

    async def _open(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, *self._listen)
        sockname = self._server.sockets[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        self._links.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        link = _Link(writer)
        if self._mode.name == "reset":
            self._reset += 1
            link.close(rst=True)
            return
        self._links.add(link)
        try:
            await self._serve(link, reader)
        except asyncio.CancelledError:
            # The proxy is shutting down. The handler ends normally instead of
            # re-raising: asyncio's stream server would log a cancelled handler.
            link.close(rst=True)
        finally:
            self._links.discard(link)

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            # The target is down: the client sees its connection reset at once,
            # much as it would see "connection refused" without the proxy.
            link.close(rst=True)
            return
        if link.closed:  # reset while connecting
            _abort_with_rst(up_writer)
            return
        link.upstream = up_writer
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, link.client)),
        ]
        # When one direction ends the connection is over: a side that closed cleanly
        # had its end forwarded (after all its data), so close the other side too; a
        # side that failed (a reset) is mirrored by resetting the other. Waiting for
        # both would leave a client talking to an upstream that is gone.
        done, _ = await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        if any(not task.cancelled() and task.exception() is not None for task in done):
            link.close(rst=True)
        else:
            link.close()
        await asyncio.gather(*link.tasks, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction: read, hold while blackholed, wait out the delay, write.

        Reading and writing are separate tasks joined by a queue, so a delay adds
        latency without cutting throughput.
        """
        flowing = self._flowing
        assert flowing is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read_side() -> None:
            while True:
                await flowing.wait()
                data = await reader.read(_CHUNK)
                queue.put_nowait((loop.time() + self._mode.seconds, data))
                if not data:
                    return

        async def write_side() -> None:
            while True:
                due, data = await queue.get()
                await flowing.wait()
                while (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                    await flowing.wait()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        tasks = {asyncio.create_task(read_side()), asyncio.create_task(write_side())}
        try:
            await asyncio.gather(*tasks)  # raises what fails first: the caller resets the link
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
