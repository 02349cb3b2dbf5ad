"""The load generator: N HTTP/1.1 clients, each on its own keep-alive connection."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import NamedTuple

from ..measure import Sample, Window, collect, snap_window, window
from ..noise import Probe, Snapshot

#: A measurement that has not ended this long after its window did is stuck.
STUCK_AFTER = 60.0

#: The view that reads the session's integer, adds one and stores it.
WRITE = "/count"
#: The view that returns the session's integer without changing the session.
READ = "/read"
#: Reads per write in the read-mostly workload.
READS_PER_WRITE = 9


class Steps(NamedTuple):
    """What one client requests: `first` once, then `cycle` over and over."""

    first: tuple[str, ...]
    cycle: tuple[str, ...]


def steps_for(workload: str, sessions: bool) -> Steps:
    """The requests of `workload` (one of ``write``, ``read``, ``mostly``)."""
    if not sessions:
        return Steps((), ("/ping",))
    if workload == "write":
        return Steps((), (WRITE,))
    if workload == "read":
        # The session must exist before a read can find it: one write creates it
        # (in the warm-up, unless the warm-up is shorter than one request).
        return Steps((WRITE,), (READ,))
    if workload == "mostly":
        return Steps((), (WRITE,) + (READ,) * READS_PER_WRITE)
    raise ValueError(f"unknown workload {workload!r}")


class HttpError(RuntimeError):
    """The server answered what no correct server answers to this request."""


class SessionLost(HttpError):
    """A ``/count`` answer was not the client's previous one plus one."""


class Response(NamedTuple):
    """What the client looks at in a response."""

    status: int
    body: bytes
    close: bool


class Jar:
    """One client's cookies: name to value, from ``Set-Cookie``; expired ones dropped."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        #: Bumped on every change, so that requests are rebuilt only then.
        self.version = 0

    def set(self, header: str) -> None:
        """Apply one ``Set-Cookie`` header value."""
        pair, _, attributes = header.partition(";")
        name, _, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        expired = not value
        for attribute in attributes.split(";"):
            key, _, arg = attribute.partition("=")
            key = key.strip().lower()
            if key == "max-age" and arg.strip().lstrip("-").isdigit():
                expired = expired or int(arg) <= 0
            elif key == "expires" and "1970" in arg:
                expired = True
        if expired:
            if self.cookies.pop(name, None) is not None:
                self.version += 1
        elif self.cookies.get(name) != value:
            self.cookies[name] = value
            self.version += 1

    def header(self) -> str:
        """The ``Cookie`` header's value (empty without cookies)."""
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


def parse(buffer: bytearray, jar: Jar) -> tuple[Response, int] | None:
    """Parse one response from the front of `buffer`, applying its cookies to `jar`."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    try:
        status = int(rest[:3])
    except ValueError:
        raise HttpError(f"not an HTTP status line: {lines[0][:100]!r}") from None
    length: int | None = None
    chunked = False
    close = version == "HTTP/1.0"
    cookies: list[str] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "set-cookie":
            cookies.append(value.strip())
        elif name == "connection":
            close = value.strip().lower() == "close"
    start = end + 4
    if chunked:
        body = bytearray()
        pos = start
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                taken = trailer_end + 4
                break
            if len(buffer) < pos + size + 2:
                return None
            body += buffer[pos : pos + size]
            pos += size + 2
        content = bytes(body)
    elif length is not None:
        if len(buffer) < start + length:
            return None
        content = bytes(buffer[start : start + length])
        taken = start + length
    elif status in (204, 304):
        content, taken = b"", start
    else:
        raise HttpError(f"a {status} response with neither Content-Length nor chunked body")
    for header in cookies:
        jar.set(header)
    return Response(status, content, close), taken


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time."""

    def __init__(self, host: str, jar: Jar) -> None:
        self.host = host
        self.jar = jar
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._lost: BaseException | None = None
        self._requests: dict[str, tuple[int, bytes]] = {}

    @classmethod
    async def open(cls, host: str, port: int, jar: Jar) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(f"{host}:{port}", jar), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport  # asyncio sets TCP_NODELAY on TCP transports

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = parse(self._buffer, self.jar)
        except (HttpError, ValueError) as exc:
            waiter.set_exception(HttpError(f"bad response: {exc}"))
            return
        if parsed is not None:
            response, taken = parsed
            del self._buffer[:taken]
            self._waiter = None
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("the server closed the connection")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)
        if not self.closed.done():
            self.closed.set_result(None)

    def _request(self, path: str) -> bytes:
        cached = self._requests.get(path)
        if cached is not None and cached[0] == self.jar.version:
            return cached[1]
        cookie = self.jar.header()
        text = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if cookie:
            text += f"Cookie: {cookie}\r\n"
        request = (text + "\r\n").encode("latin-1")
        self._requests[path] = (self.jar.version, request)
        return request

    async def get(self, path: str) -> Response:
        """Send ``GET path`` and return the whole response."""
        if self._lost is not None or self._transport is None:
            raise ConnectionResetError("the connection is closed")
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(self._request(path))
        return await waiter

    async def aclose(self) -> None:
        """Close the connection and wait until it is closed."""
        if self._transport is not None:
            self._transport.close()
        await self.closed


@dataclasses.dataclass
class Load:
    """One measurement's result on the client side."""

    sample: Sample
    reconnects: int

    @property
    def wal_bytes(self) -> int | None:
        """WAL bytes PostgreSQL wrote in the window, if the probe read the WAL position."""
        return None if self.sample.usage is None else self.sample.usage.wal_bytes

    @property
    def wal_per_request(self) -> float | None:
        """WAL bytes per request counted, or None."""
        if self.wal_bytes is None or self.sample.ops <= 0:
            return None
        return self.wal_bytes / self.sample.ops


async def _client(
    port: int, steps: Steps, counts: bool, win: Window
) -> tuple[list[float], list[float], int]:
    host, jar = "127.0.0.1", Jar()
    conn = await Connection.open(host, port, jar)
    ends: list[float] = []
    lats: list[float] = []
    reconnects = 0
    expected = 0
    clock = time.perf_counter
    first, cycle = steps.first, steps.cycle
    i = 0
    try:
        while True:
            path = first[i] if i < len(first) else cycle[(i - len(first)) % len(cycle)]
            i += 1
            t0 = clock()
            response = await conn.get(path)
            t1 = clock()
            if response.status != 200:
                raise HttpError(f"GET {path} answered {response.status}: {response.body[:300]!r}")
            if counts:
                if path == WRITE:
                    expected += 1
                if response.body != b"%d" % expected:
                    raise SessionLost(
                        f"GET {path} answered {response.body[:100]!r} where the client's "
                        f"session should hold {expected - (path == WRITE)}: its session was "
                        "lost or mixed up"
                    )
            if t1 >= win.start:
                ends.append(t1)
                lats.append(t1 - t0)
            if t1 >= win.end:
                return ends, lats, reconnects
            if response.close:
                await conn.aclose()
                conn = await Connection.open(host, port, jar)
                reconnects += 1
    finally:
        await conn.aclose()


async def run_load(
    port: int,
    steps: Steps | str,
    counts: bool,
    clients: int,
    warmup: float,
    duration: float,
    probe: Probe | None = None,
) -> Load:
    """Run `clients` clients against 127.0.0.1:`port` for `warmup` + `duration` seconds."""
    if isinstance(steps, str):
        steps = Steps((), (steps,))
    win = window(warmup, duration)
    marks: list[Snapshot] = []

    try:
        async with asyncio.timeout(warmup + duration + STUCK_AFTER), asyncio.TaskGroup() as group:
            tasks = [group.create_task(_client(port, steps, counts, win)) for _ in range(clients)]
            if probe is not None:
                group.create_task(snap_window(win, probe, marks))
    except BaseExceptionGroup as group_error:
        # One client's failure is the story: the others were cancelled because of it.
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    results = [task.result() for task in tasks]
    sample = collect(win, [(ends, lats) for ends, lats, _ in results], None, marks)
    return Load(sample, sum(r for _, _, r in results))
