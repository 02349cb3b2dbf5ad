"""The rules both batchers follow, written once.

`_batch.py` (threads) and `_batch_async.py` (asyncio) hand lanes from caller to caller
with different primitives, so they stay two hand-written files; when a call may run
alone or must queue, what a batch may hold and what happens when a combined statement
fails are the same for both, and live here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TypeVar

from psycopg_pool import PoolTimeout

from ._core import MAX_BATCH, MAX_BATCH_BYTES, Statement
from ._facade import LANES
from .errors import DatabaseError

R = TypeVar("R")


class Lanes:
    """How many statements of one operation run, and who may start the next one.

    A call runs alone while fewer than `alone` statements run, nobody queues (a
    call never overtakes the queue) and no lane is serving one. Otherwise it queues,
    and queued calls are served by lanes: a statement that ends hands its turn to
    the oldest queued call, which leads a combined statement, while fewer than
    `LANES` lanes run; a lane whose batch hit the cap opens one more, while fewer
    than `limit` statements run (the lanes can't carry the queue). So the number in
    flight follows the pool's size and the queue's length, and never exceeds the
    pool.

    Not thread-safe: the thread batcher calls it under its lock.

    Args:
        limit: The most statements that may run at once (the pool's size, read at
            each decision, so a resized pool is followed).
        alone: The most that may run singly, or None for `limit`.
    """

    __slots__ = ("_alone", "_limit", "busy", "lanes")

    def __init__(self, limit: Callable[[], int], alone: int | None) -> None:
        self._limit = limit
        self._alone = alone
        self.busy = 0  # statements running, single or combined
        self.lanes = 0  # of which lanes serving the queue

    def start_alone(self, queued: bool) -> bool:
        """Whether a new call runs alone now (if so, it is counted as running).

        Args:
            queued: Whether calls are queued.
        """
        limit = self._limit()
        cap = limit if self._alone is None else min(self._alone, limit)
        # While lanes serve a queue, new calls join it: running some alone beside the
        # lanes would take the connections and the CPU that the lanes' big batches
        # use better, and the queue would never drain into them.
        if queued or self.lanes or self.busy >= cap:
            return False
        self.busy += 1
        return True

    def finish(self, *, lane: bool, queued: bool) -> bool:
        """A statement ended: whether its turn passes to the oldest queued call.

        Args:
            lane: Whether it was a lane's (combined) statement.
            queued: Whether calls are queued.

        Returns:
            True if the oldest queued call now holds a lane (and must be told).
        """
        if lane:
            self.lanes -= 1
        if queued and self.lanes < LANES:
            self.lanes += 1
            return True
        self.busy -= 1
        return False

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
) -> list[R]:
    """The batch `first` leads: it and the oldest queued calls, within the caps.

    At most `MAX_BATCH` calls, and at most `MAX_BATCH_BYTES` of payload (though
    `first` always goes, however big); the rest stay queued for the next batch.

    Args:
        first: The call that leads the batch (already off the queue).
        queue: The queued calls, oldest first; the ones taken are removed.
        statement: A call's statement.
        size: A statement's payload bytes.
        dropped: Whether a queued call was withdrawn (cancelled): such calls are
            removed and never sent.

    Returns:
        The calls to serve with one combined statement, `first` first.
    """
    batch, total = [first], size(statement(first))
    while queue and len(batch) < MAX_BATCH:
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
