"""Combining concurrent calls of one operation into shared statements, for asyncio.

The twin of `_batch.py`, following the same rules (`_concurrency.py`). Handing a
result over is cheap here (a future), so combining pays as soon as two calls wait:
singles do not spread over the whole pool as threads' do. No task is created. A queued
call that is cancelled is dropped before it is sent; a lane holder that is cancelled
hands its lane, and the calls it was serving, to the next caller. See
docs/usage.md#concurrency and docs/reliability.md#cancellation-asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ._concurrency import LANES, Depth, Lanes, fails_all, queue_timeout, take_batch
from ._core import Statement
from .errors import DatabaseError

T = TypeVar("T")

#: What a queued call's future is given instead of a result: "the lane is yours".
_LEAD: Any = object()


@dataclasses.dataclass(slots=True, eq=False)
class _Request:
    """One queued call: its statement, the future its caller awaits, its deadline."""

    statement: Statement
    future: asyncio.Future[Any]
    deadline: float  # on the loop's clock


class AsyncBatcher(Generic[T]):
    """Run calls of one operation singly while lanes are free, combined when they are not.

    The asyncio twin of `_batch.Batcher`, with the same arguments (``single`` and
    ``combined`` are coroutine functions).
    """

    def __init__(
        self,
        operation: str,
        single: Callable[[Statement], Awaitable[T]],
        combined: Callable[[Sequence[Statement]], Awaitable[list[T]]],
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
        self._lanes = Lanes(limit, alone=LANES, depth=depth)
        self._watchdog: asyncio.TimerHandle | None = None  # set while calls are queued
        self._queue: collections.deque[_Request] = collections.deque()
        #: False: every call runs alone, as without a batcher (a Citus distributed
        #: table, where a combined statement spans shards: docs/scaling.md#citus).
        self.combine = True

    async def submit(self, statement: Statement) -> T:
        """Run `statement`, alone or combined with concurrent ones; return its result."""
        if not self.combine:
            return await self._single(statement)
        if self._lanes.start_alone(bool(self._queue)):
            sent = time.perf_counter()
            try:
                return await self._single(statement)
            finally:
                self._release(lane=False, sent=sent)
        loop = asyncio.get_running_loop()
        request = _Request(statement, loop.create_future(), loop.time() + self._timeout())
        self._queue.append(request)
        if self._watchdog is None:
            self._arm()
        try:
            outcome = await request.future
        except asyncio.CancelledError:
            # Handed the lane just as we were cancelled: pass it on, or it is lost.
            if request.future.done() and not request.future.cancelled():
                self._release(lane=True, sent=None)
            raise
        if outcome is _LEAD:
            return await self._serve(request)
        result: T = outcome
        return result

    def _release(self, *, lane: bool, sent: float | None) -> None:
        """A statement sent at `sent` (None: a lane given up unused) is done: pass its turn on."""
        wall = None if sent is None else time.perf_counter() - sent
        if self._lanes.finish(lane=lane, queued=self._drop_withdrawn(), wall=wall):
            self._queue.popleft().future.set_result(_LEAD)

    def _expire(self) -> None:
        """Fail the calls that waited in the queue for the pool's whole timeout."""
        # One timer per batcher, not one per call (a timer costs more than the rest of
        # queueing a call): the queue is in arrival order, so the oldest call expires
        # next. An expired call fails while queued and, like a cancelled one, is dropped.
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._queue and (self._queue[0].future.done() or self._queue[0].deadline <= now):
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(queue_timeout(self._operation, self._timeout()))
        self._arm()

    def _arm(self) -> None:
        """Set the timer for the oldest queued call, if it is not set for it already."""
        if not self._queue:
            return
        deadline = self._queue[0].deadline
        if self._watchdog is not None:
            if self._watchdog.when() <= deadline:
                return
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _drop_withdrawn(self) -> bool:
        """Drop the calls cancelled while queued from the front; whether any is left."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return bool(self._queue)

    def _take(self, first: _Request) -> list[_Request]:
        # A call cancelled while queued is never sent.
        most = self._lanes.share(len(self._queue) + 1)
        batch = take_batch(first, self._queue, self._size, _withdrawn, most)
        if self._lanes.open_extra(self._drop_withdrawn()):
            self._queue.popleft().future.set_result(_LEAD)
        return batch

    async def _serve(self, leader: _Request) -> T:
        batch = self._take(leader)
        followers = batch[1:]
        sent = time.perf_counter()
        try:
            if not followers:
                return await self._single(leader.statement)
            try:
                results = await self._combined([request.statement for request in batch])
            except DatabaseError as exc:
                results = await self._fail_or_retry(batch, exc)
        except asyncio.CancelledError:
            # The others did not ask to be cancelled: they go back to the front.
            self._queue.extendleft(reversed(followers))
            self._arm()  # they are older than the call the timer was set for
            raise
        except BaseException as exc:
            for request in followers:
                if not request.future.done():
                    request.future.set_exception(exc)
            raise
        finally:
            self._release(lane=True, sent=sent)
        for request, result in zip(followers, results[1:], strict=True):
            if request.future.done():
                continue
            if isinstance(result, DatabaseError):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
        if isinstance(results[0], DatabaseError):
            raise results[0]
        own: T = results[0]
        return own

    async def _fail_or_retry(self, batch: list[_Request], exc: DatabaseError) -> list[Any]:
        """A combined statement failed: fail them all, or run each alone (`fails_all`)."""
        if fails_all(exc):
            return [exc.for_another_caller() for _ in batch]
        outcomes: list[Any] = []
        for request in batch:
            try:
                outcomes.append(await self._single(request.statement))
            except DatabaseError as own:
                outcomes.append(own)
        return outcomes


def _withdrawn(request: _Request) -> bool:
    return request.future.done()
