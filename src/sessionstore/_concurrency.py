"""The adaptive concurrency controller both batchers follow, and the batch tuning.

`_batch.py` (threads) and `_batch_async.py` (asyncio) hand lanes from caller to caller
with different primitives, so they stay two hand-written files; when a call may run
alone or must queue (`Lanes`, `Depth`), what a batch may hold (`take_batch` and the
constants below) and what happens when a combined statement fails are the same for
both, and live here. The measurements behind the constants are in docs/performance.md.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from psycopg_pool import PoolTimeout

from ._core import Statement
from .errors import DatabaseError

R = TypeVar("R")

#: The most concurrent calls one combined statement serves.
MAX_BATCH = 64

#: The most payload bytes one combined commit carries; a larger payload goes alone.
MAX_BATCH_BYTES = 1024 * 1024

#: How many combined statements of an operation (finds, commits, touches, each on
#: its own) serve its queue at once, while their batches are not full: two keep one
#: round trip in flight while the other's results are being handed out. A batch that
#: hits the cap opens one more lane, up to the pool's size (see `Lanes`).
LANES = 2

#: How many calls may run singly at once on threads (while nobody queues), within the
#: pool's size. Handing a result from thread to thread costs a wake-up and GIL
#: switches, so up to a point singles beat combining; past it, many threads each
#: running their own statement fight over the GIL, and combining wins again. Asyncio
#: hands results over cheaply (a future), so there `LANES` run singly.
#: See docs/performance.md.
ALONE = 2 * LANES


class Depth:
    """How many statements the round trip holds: its length over the client's CPU per statement.

    The bandwidth-delay product of the path to the server, in statements. On a
    loopback socket a statement's wall time is mostly CPU (the client's and the
    server's), the depth is about one, and two lanes of big combined statements keep
    the server busy. Through a network a statement spends most of its time on the
    wire: a client that spends 60 us of CPU per statement can keep a 1 ms round
    trip 16 statements deep, and two lanes would leave callers waiting a round trip
    in the queue. So the lanes follow the depth, and no constant is tuned to a box.

    The round trip is the least wall time of recent statements (the one least
    inflated by queueing on either side), drifting up by `DRIFT` per statement so a
    slower path is followed; the client's CPU per statement is the process's CPU
    time (`time.process_time`, every thread) over each `WINDOW` statements, so the
    application's own work between calls counts, as it should: a client busy with
    other things keeps fewer statements in flight.

    One per store, shared by its batchers: two of them recording at once (threads
    under different locks) may lose a sample, which an estimate can afford.
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

    A call runs alone while fewer than `alone` statements run, nobody queues (a
    call never overtakes the queue) and fewer than `joined` lanes are serving one.
    Otherwise it queues,
    and queued calls are served by lanes: a statement that ends hands its turn to
    the oldest queued call, which leads a combined statement, while fewer than
    `LANES` lanes run; a lane whose batch hit the cap opens one more, while fewer
    than `limit` statements run (the lanes can't carry the queue). So the number in
    flight follows the pool's size and the queue's length, and never exceeds the
    pool.

    Where the round trip holds more statements than that (`Depth`: a network), the
    depth raises both bounds: calls run alone, beside lanes too, while fewer than
    the depth run, and as many lanes serve the queue.

    Not thread-safe: the thread batcher calls it under its lock.

    Args:
        limit: The most statements that may run at once (the pool's size, read at
            each decision, so a resized pool is followed).
        alone: The most that may run singly, or None for `limit`.
        depth: The store's `Depth`; None for one of its own.
        joined: How many lanes must be serving for new calls to join the queue
            rather than run alone (on a shallow path): `LANES` on asyncio, where a
            lane's callers always come back after it closed, so with 1 they would
            all queue behind the one lane left; 1 for threads, where a thread
            running alone costs no hand-over and measured faster so (see
            docs/performance.md).
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
        """Whether a new call runs alone now (if so, it is counted as running).

        Args:
            queued: Whether calls are queued.
        """
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
        """A statement ended: whether its turn passes to the oldest queued call.

        Args:
            lane: Whether it was a lane's (combined) statement.
            queued: Whether calls are queued.
            wall: How long it took, in seconds (for the `Depth`); None for a lane
                given up before it sent anything.

        Returns:
            True if the oldest queued call now holds a lane (and must be told).
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
        """How many of the `waiting` calls (its leader among them) a lane's batch takes.

        All of them (up to the caps), unless the round trip has room for more
        statements than run (`Depth`): then the calls are spread over the room, and
        `open_extra` opens lanes for the rest, so a network's round trips carry
        many small batches at once rather than one big one after another.

        Args:
            waiting: The leader and the calls queued behind it.
        """
        room = min(self._depth(), self._limit()) - self.busy
        return waiting if room <= 0 else -(-waiting // (room + 1))

    def open_extra(self, queued: bool) -> bool:
        """After a batch was taken: whether another lane opens for the calls left.

        Args:
            queued: Whether calls are still queued.

        Returns:
            True if the oldest queued call now holds a new lane (and must be told).
        """
        if queued and self.busy < self._limit():
            self.busy += 1
            self.lanes += 1
            return True
        return False


def take_batch(
    first: R,
    queue: deque[R],
    statement: Callable[[R], Statement],
    size: Callable[[Statement], int],
    dropped: Callable[[R], bool] = lambda request: False,
    most: int = MAX_BATCH,
) -> list[R]:
    """The batch `first` leads: it and the oldest queued calls, within the caps.

    At most `most` and `MAX_BATCH` calls, and at most `MAX_BATCH_BYTES` of payload
    (though `first` always goes, however big); the rest stay queued for the next batch.

    Args:
        first: The call that leads the batch (already off the queue).
        queue: The queued calls, oldest first; the ones taken are removed.
        statement: A call's statement.
        size: A statement's payload bytes.
        dropped: Whether a queued call was withdrawn (cancelled): such calls are
            removed and never sent.
        most: The most calls to take (`Lanes.share`).

    Returns:
        The calls to serve with one combined statement, `first` first.
    """
    batch, total = [first], size(statement(first))
    most = min(most, MAX_BATCH)
    while queue and len(batch) < most:
        if dropped(queue[0]):
            queue.popleft()
            continue
        total += size(statement(queue[0]))
        if total > MAX_BATCH_BYTES:
            break
        batch.append(queue.popleft())
    return batch


def fails_all(exc: DatabaseError) -> bool:
    """Whether a failed combined statement fails every call in it, with no retry.

    When the server answered with an error, one call may be the cause (a row locked
    elsewhere, a value it refused): each call then runs again on its own, so only the
    guilty one fails. When no server answered (the pool timed out, the connection
    failed: no SQLSTATE, or class 08), every call fails at once, rather than each
    waiting out the same timeout again.

    Args:
        exc: What the combined statement raised.

    Returns:
        True to fail them all; False to run each call again singly.
    """
    return exc.sqlstate is None or exc.sqlstate.startswith("08")


def queue_timeout(operation: str, seconds: float) -> DatabaseError:
    """The error of a call that waited in a batcher's queue for the pool's timeout.

    A queued call is waiting for a connection, as a caller of ``pool.connection()``
    is, so it is bounded alike and fails alike: a `DatabaseError` caused by
    `psycopg_pool.PoolTimeout`. Without the bound, calls queued behind statements
    that hang (a silent network) would wait with them.

    Args:
        operation: The operation's name.
        seconds: The pool's timeout.

    Returns:
        The error to raise in the caller.
    """
    cause = PoolTimeout(
        f"couldn't get a connection after {seconds:.2f} sec "
        "(queued behind the store's running statements)"
    )
    error = DatabaseError(operation, cause)
    error.__cause__ = cause  # as `raise ... from` would set it
    return error
