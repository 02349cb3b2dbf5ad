"""Combining concurrent calls of one operation into shared statements, for asyncio.

The twin of `_batch.py` (the rules both follow are in `_batch_rules.py`): at most
`lanes` calls of an operation run at once; calls that arrive while all lanes are busy
queue, and the oldest of them, handed a lane, serves the queue with one combined
statement. No task is created: the callers do the work. Cancellation is safe: a
queued call that is cancelled is dropped before it is sent, and a lane holder that is
cancelled hands its lane, and the calls it was serving, on to the next caller.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ._batch_rules import fails_all, take_batch
from ._core import Statement
from .errors import DatabaseError

T = TypeVar("T")

#: What a queued call's future is given instead of a result: "the lane is yours".
_LEAD: Any = object()


class _Request:
    """One queued call: its statement, and the future its caller awaits."""

    __slots__ = ("future", "statement")

    def __init__(self, statement: Statement, future: asyncio.Future[Any]) -> None:
        self.statement = statement
        self.future = future


class AsyncBatcher(Generic[T]):
    """Run calls of one operation singly while lanes are free, combined when they are not.

    Args:
        single: Runs one statement, returns its result.
        combined: Runs many statements as one, returns one result per statement.
        size: The payload bytes of a statement, to cap combined statements.
        lanes: How many calls (single or combined) may run at once.
    """

    def __init__(
        self,
        single: Callable[[Statement], Awaitable[T]],
        combined: Callable[[Sequence[Statement]], Awaitable[list[T]]],
        size: Callable[[Statement], int],
        lanes: int,
    ) -> None:
        self._single = single
        self._combined = combined
        self._size = size
        self._lanes = lanes
        self._busy = 0
        self._queue: collections.deque[_Request] = collections.deque()

    async def submit(self, statement: Statement) -> T:
        """Run `statement`, alone or combined with concurrent ones; return its result.

        Args:
            statement: What a single call would run.

        Returns:
            Its result.

        Raises:
            DatabaseError: If the database failed (for this statement).
        """
        if self._busy < self._lanes:
            self._busy += 1
            try:
                return await self._single(statement)
            finally:
                self._release()
        request = _Request(statement, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        try:
            outcome = await request.future
        except asyncio.CancelledError:
            # Handed the lane just as we were cancelled: pass it on, or it is lost.
            if request.future.done() and not request.future.cancelled():
                self._release()
            raise
        if outcome is _LEAD:
            return await self._serve(request)
        result: T = outcome
        return result

    def _release(self) -> None:
        """Hand the lane to the oldest queued call still waiting, or free it."""
        while self._queue:
            heir = self._queue.popleft()
            if not heir.future.done():  # skip callers that were cancelled meanwhile
                heir.future.set_result(_LEAD)
                return
        self._busy -= 1

    def _take(self, first: _Request) -> list[_Request]:
        # A call cancelled while queued is never sent.
        return take_batch(first, self._queue, _statement, self._size, _withdrawn)

    async def _serve(self, leader: _Request) -> T:
        batch = self._take(leader)
        followers = batch[1:]
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
            raise
        except BaseException as exc:
            for request in followers:
                if not request.future.done():
                    request.future.set_exception(exc)
            raise
        finally:
            self._release()
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


def _statement(request: _Request) -> Statement:
    return request.statement


def _withdrawn(request: _Request) -> bool:
    return request.future.done()
