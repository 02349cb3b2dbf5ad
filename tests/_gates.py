"""Server-side gates for the session contract's routes: make requests overlap for sure.

A contract route loads the session, then waits here: until `n` requests of its group
have loaded (so every one of them loads before any saves), or until the test releases
it (so it saves after another request finished). Waiting polls a lock-guarded table,
so one `Gates` serves threads and any event loop alike. A wait that runs out raises:
the request fails loudly instead of passing without overlap.
"""

from __future__ import annotations

import asyncio
import threading
import time

#: How long a request waits for the others of its group, or for its release.
TIMEOUT = 20.0


class Gates:
    """Arrival counts per group and releases per hold name, shared by a server's requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived: dict[str, int] = {}
        self._released: set[str] = set()

    def arrive(self, group: str) -> None:
        with self._lock:
            self._arrived[group] = self._arrived.get(group, 0) + 1

    def arrived(self, group: str) -> int:
        with self._lock:
            return self._arrived.get(group, 0)

    def release(self, hold: str) -> None:
        with self._lock:
            self._released.add(hold)

    def _ready(self, group: str | None, n: int, hold: str | None) -> bool:
        with self._lock:
            if group is not None and self._arrived.get(group, 0) < n:
                return False
            return hold is None or hold in self._released

    def wait(self, group: str | None, n: int, hold: str | None) -> None:
        """Arrive in `group` and wait for `n` arrivals and the release of `hold`."""
        if group is not None:
            self.arrive(group)
        deadline = time.monotonic() + TIMEOUT
        while not self._ready(group, n, hold):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {group}/{hold} not reached in {TIMEOUT} s")
            time.sleep(0.002)

    async def await_(self, group: str | None, n: int, hold: str | None) -> None:
        """`wait` for asyncio servers."""
        if group is not None:
            self.arrive(group)
        deadline = time.monotonic() + TIMEOUT
        while not self._ready(group, n, hold):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {group}/{hold} not reached in {TIMEOUT} s")
            await asyncio.sleep(0.002)


def params(query: dict[str, str]) -> tuple[str, str, str | None, int, str | None]:
    """A contract /c/set request's parameters: key, value, group, n, hold."""
    return (
        query["key"],
        query["value"],
        query.get("group"),
        int(query.get("n", "1")),
        query.get("hold"),
    )
