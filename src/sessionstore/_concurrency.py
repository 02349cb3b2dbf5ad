"""The rules both batchers follow: when a call runs alone or queues, and what a batch holds.

`_batch.py` (threads) and `_batch_async.py` (asyncio) hand lanes over with different
primitives; `Lanes`, `Depth`, `take_batch`, `fails_all` and the constants serve both.
See docs/performance.md#lanes-how-many-statements-run-at-once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

from psycopg_pool import PoolTimeout

from ._core import Statement
from .errors import DatabaseError


class _Queued(Protocol):
    """A queued call, as `take_batch` reads it."""

    statement: Statement


R = TypeVar("R", bound=_Queued)

#: The most concurrent calls one combined statement serves.
MAX_BATCH = 64

#: The most payload bytes one combined commit carries; a larger payload goes alone.
MAX_BATCH_BYTES = 1024 * 1024

#: How many combined statements of an operation serve its queue at once while their
#: batches are not full: two keep one round trip in flight while the other's results
#: are handed out. A batch that hits the cap opens one more lane (see `Lanes`).
LANES = 2

#: How many calls may run singly at once on threads (while nobody queues), within the
#: pool's size; on asyncio `LANES` do (docs/performance.md).
ALONE = 2 * LANES


class Depth:
    """How many statements the round trip holds: its length over the client's CPU per statement.

    How it is estimated: docs/performance.md#lanes-how-many-statements-run-at-once. One per
    store, shared by its batchers: two recording at once may lose a sample, which an
    estimate can afford.
    """

    WINDOW = 64
    DRIFT = 1.01

    __slots__ = ("_cost", "_count", "_floor", "_mark")

    def __init__(self) -> None:
        self._floor = float("inf")  # the round trip, seconds
        self._cost = 0.0  # process CPU seconds per statement; 0 until measured
        self._count = 0
        self._mark = time.process_time()

    def record(self, wall: float) -> None:
        """Count a statement that took `wall` seconds, from sending to its results."""
        floor = self._floor * self.DRIFT
        self._floor = wall if wall < floor else floor
        self._count += 1
        if self._count >= self.WINDOW:
            now = time.process_time()
            self._cost = (now - self._mark) / self._count
            self._mark, self._count = now, 0

    def __call__(self) -> int:
        """The depth: how many statements fit in the round trip (0 until measured)."""
        if self._cost <= 0.0:
            return 0
        return int(self._floor / self._cost)


class Lanes:
    """How many statements of one operation run, and who may start the next one.

    A call runs alone while fewer than `alone` statements run (None: `limit`, the pool's
    size, read at each decision), nobody queues and fewer than `joined` lanes serve the
    queue; else it queues, served by up to `LANES` lanes and one more per batch that hit
    the cap, within `limit`; the `depth` raises both bounds
    (docs/performance.md#lanes-how-many-statements-run-at-once). Not thread-safe: the
    thread batcher holds its lock.
    """

    __slots__ = ("_alone", "_depth", "_joined", "_limit", "busy", "lanes")

    def __init__(
        self,
        limit: Callable[[], int],
        alone: int | None,
        depth: Depth | None = None,
        joined: int = LANES,
    ) -> None:
        self._limit = limit
        self._alone = alone
        self._joined = joined
        self._depth = Depth() if depth is None else depth
        self.busy = 0  # statements running, single or combined
        self.lanes = 0  # of which lanes serving the queue

    def start_alone(self, queued: bool) -> bool:
        """Whether a new call runs alone now (then it counts as running)."""
        limit = self._limit()
        depth = self._depth()
        alone = limit if self._alone is None else max(self._alone, depth)
        # While lanes serve a queue, new calls join it: running some alone beside the
        # lanes would take the connections and the CPU that the lanes' big batches
        # use better, and the queue would never drain into them; unless the round
        # trip holds more statements than run, and a call sent now waits for nothing.
        joins = self.lanes >= self._joined and self.busy >= depth
        if queued or joins or self.busy >= min(alone, limit):
            return False
        self.busy += 1
        return True

    def finish(self, *, lane: bool, queued: bool, wall: float | None) -> bool:
        """A statement ended: whether its turn passes to the oldest queued call (to be told).

        `wall` is how long it took, for the `Depth`; None for a lane given up unused.
        """
        if wall is not None:
            self._depth.record(wall)
        if lane:
            self.lanes -= 1
        if queued and self.lanes < max(LANES, self._depth()):
            self.lanes += 1
            return True
        self.busy -= 1
        return False

    def share(self, waiting: int) -> int:
        """How many of the `waiting` calls (leader included) a lane's batch takes.

        All of them (up to the caps), unless the round trip has room for more statements
        than run: then they are spread over the room, and `open_extra` opens lanes for the
        rest, so a network carries many small batches at once rather than one big one after
        another.
        """
        room = min(self._depth(), self._limit()) - self.busy
        return waiting if room <= 0 else -(-waiting // (room + 1))

    def open_extra(self, queued: bool) -> bool:
        """After a batch was taken: whether the oldest `queued` call now leads a new lane."""
        if queued and self.busy < self._limit():
            self.busy += 1
            self.lanes += 1
            return True
        return False


def take_batch(
    first: R,
    queue: deque[R],
    size: Callable[[Statement], int],
    dropped: Callable[[R], bool] = lambda request: False,
    most: int = MAX_BATCH,
) -> list[R]:
    """The batch `first` leads: it and the oldest queued calls, removed from `queue`.

    At most `most` and `MAX_BATCH` calls and `MAX_BATCH_BYTES` of payload (`first` goes
    however big); calls `dropped` (cancelled) are removed and never sent.
    """
    batch, total = [first], size(first.statement)
    most = min(most, MAX_BATCH)
    while queue and len(batch) < most:
        if dropped(queue[0]):
            queue.popleft()
            continue
        total += size(queue[0].statement)
        if total > MAX_BATCH_BYTES:
            break
        batch.append(queue.popleft())
    return batch


def fails_all(exc: DatabaseError) -> bool:
    """Whether a failed combined statement fails all its calls at once: no server answered."""
    return exc.sqlstate is None or exc.sqlstate.startswith("08")


def queue_timeout(operation: str, seconds: float) -> DatabaseError:
    """The error of a call queued in a batcher for the pool's timeout, as the pool's would be."""
    cause = PoolTimeout(
        f"couldn't get a connection after {seconds:.2f} sec "
        "(queued behind the store's running statements)"
    )
    error = DatabaseError(operation, cause)
    error.__cause__ = cause  # as `raise ... from` would set it
    return error
