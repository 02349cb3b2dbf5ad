"""Combining concurrent calls of one operation into shared statements, for threads.

Calls run singly while the pool has connections for them; once they would wait, they
queue, and a caller handed a lane serves the queued calls (up to a cap) with one
combined statement (`SessionCore.find_many`...), so a round trip serves many. No
thread is started: the callers do the work, and the lane passes from hand to hand.
`_batch_async.py` is the asyncio twin; the rules both follow are in `_concurrency.py`.
See docs/usage.md#concurrency and docs/performance.md.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ._concurrency import ALONE, Depth, Lanes, fails_all, queue_timeout, take_batch
from ._core import Statement
from .errors import DatabaseError

T = TypeVar("T")

_PENDING: Any = object()


class _Request:
    """One queued call: its statement, and where its outcome goes."""

    __slots__ = ("_settled", "error", "lead", "next", "result", "statement")

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self.result: Any = _PENDING
        self.error: BaseException | None = None
        self.lead = False  # set when the call is handed a lane instead of a result
        self.next: _Request | None = None  # the follower this one wakes, when woken
        # The caller sleeps on a lock created held and released by whoever settles the
        # call: the cheapest one-shot signal between threads (an Event is a condition
        # variable, a lock and a list of waiters).
        self._settled = threading.Lock()
        self._settled.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until `wake` is called, or `timeout` seconds pass; whether woken."""
        return self._settled.acquire(timeout=-1 if timeout is None else timeout)

    def wake(self) -> None:
        """Let the caller go on: it has its outcome, or the lane."""
        self._settled.release()


class Batcher(Generic[T]):
    """Run calls of one operation singly while connections are free, combined when not.

    `single` runs one statement and `combined` many as one (a result each); `size` gives
    a statement's payload bytes, for the caps. `limit` (the most statements at once) and
    `timeout` (the longest wait in the queue) are read at each call: the pool's size and
    timeout. `depth` is the store's `Depth`, shared by its batchers.
    """

    def __init__(
        self,
        operation: str,
        single: Callable[[Statement], T],
        combined: Callable[[Sequence[Statement]], list[T]],
        size: Callable[[Statement], int],
        limit: Callable[[], int],
        timeout: Callable[[], float],
        depth: Depth | None = None,
    ) -> None:
        self._operation = operation
        self._timeout = timeout
        self._single = single
        self._combined = combined
        self._size = size
        self._lanes = Lanes(limit, alone=ALONE, depth=depth, joined=1)
        self._queue: collections.deque[_Request] = collections.deque()
        #: False: every call runs alone, as without a batcher (a Citus distributed
        #: table, where a combined statement spans shards: docs/scaling.md#citus).
        self.combine = True
        self._lock = threading.Lock()

    def submit(self, statement: Statement) -> T:
        """Run `statement`, alone or combined with concurrent ones; return its result."""
        if not self.combine:
            return self._single(statement)
        with self._lock:
            if self._lanes.start_alone(bool(self._queue)):
                request = None
            else:
                request = _Request(statement)
                self._queue.append(request)
        if request is None:
            sent = time.perf_counter()
            try:
                return self._single(statement)
            finally:
                self._release(lane=False, sent=sent)
        try:
            woken = request.wait(self._timeout())
        except BaseException:  # a KeyboardInterrupt in the main thread
            self._abandon(request)
            raise
        if not woken:
            if self._withdraw(request):
                raise queue_timeout(self._operation, self._timeout())
            request.wait()  # taken into a batch, or handed a lane, just now
        if request.next is not None:
            request.next.wake()
        if request.lead:
            self._serve(request)
        if request.error is not None:
            raise request.error
        result: T = request.result
        return result

    def _withdraw(self, request: _Request) -> bool:
        """Take a call off the queue if it is still there; whether it was."""
        with self._lock:
            if request in self._queue:
                self._queue.remove(request)
                return True
            return False

    def _abandon(self, request: _Request) -> None:
        """A waiting caller is interrupted: never leave the others stuck behind it."""
        if self._withdraw(request):  # off the queue: simply dropped
            return
        # Taken into a batch or handed a lane: wait for that (a statement already at
        # the server), then pass on what it holds, the chain of wake-ups or the lane.
        request.wait()
        if request.next is not None:
            request.next.wake()
        if request.lead:
            self._release(lane=True, sent=None)

    def _release(self, *, lane: bool, sent: float | None) -> None:
        """A statement sent at `sent` (None: a lane given up unused) is done: pass its turn on."""
        wall = None if sent is None else time.perf_counter() - sent
        with self._lock:
            if not self._lanes.finish(lane=lane, queued=bool(self._queue), wall=wall):
                return
            heir = self._queue.popleft()
        heir.lead = True
        heir.wake()

    def _take(self, first: _Request) -> list[_Request]:
        with self._lock:
            most = self._lanes.share(len(self._queue) + 1)
            batch = take_batch(first, self._queue, self._size, most=most)
            extra = None
            if self._lanes.open_extra(bool(self._queue)):
                extra = self._queue.popleft()
        if extra is not None:
            extra.lead = True
            extra.wake()
        return batch

    def _serve(self, leader: _Request) -> None:
        batch = self._take(leader)
        sent = time.perf_counter()
        try:
            if len(batch) == 1:
                # Alone, the leader gets its own outcome as it is, as on the async side.
                leader.result = self._single(leader.statement)
            else:
                try:
                    results = self._combined([request.statement for request in batch])
                except DatabaseError as exc:
                    results = self._fail_or_retry(batch, exc)
                for request, result in zip(batch, results, strict=True):
                    if isinstance(result, DatabaseError):
                        request.error = result
                    else:
                        request.result = result
        except BaseException as exc:
            for request in batch:
                if request.result is _PENDING and request.error is None:
                    request.error = exc
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and friends go on up the leader's thread
        finally:
            self._release(lane=True, sent=sent)
            # The leader wakes one follower, and each follower the next: a wake-up
            # costs the waker a context switch under the GIL, so a leader waking a
            # whole batch would keep every other thread, the next lane's leader among
            # them, from running; in a chain it is paid by threads with nothing to do.
            for request, successor in itertools.pairwise(batch[1:]):
                request.next = successor
            if len(batch) > 1:
                batch[1].wake()

    def _fail_or_retry(self, batch: list[_Request], exc: DatabaseError) -> list[Any]:
        """A combined statement failed: fail them all, or run each alone (`fails_all`)."""
        if fails_all(exc):
            return [exc.for_another_caller() for _ in batch]
        outcomes: list[Any] = []
        for request in batch:
            try:
                outcomes.append(self._single(request.statement))
            except DatabaseError as own:
                outcomes.append(own)
        return outcomes
