"""Combining concurrent calls of one operation into shared statements, for threads.

The client's CPU, not the server, bounds a Python session store: each statement costs
tens of microseconds of psycopg and pool work. So at most `lanes` calls of an
operation run at once; a call that arrives while all lanes are busy queues, and when a
lane frees up, the oldest queued call takes it over and serves every queued call
(up to a cap) with one combined statement (`SessionCore.find_many`/`commit_many`).
With one caller at a time nothing queues and each call is a single statement, so
low concurrency pays only a lock; at high concurrency one round trip serves many.

No thread is started: the callers do the work, and the lane passes from hand to hand.
`_batch_async.py` is its twin for asyncio; the rules both follow (the caps of a
batch, what a failed combined statement does) are in `_batch_rules.py`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ._batch_rules import fails_all, take_batch
from ._core import Statement
from .errors import DatabaseError

T = TypeVar("T")

_PENDING: Any = object()


class _Request:
    """One queued call: its statement, and where its outcome goes."""

    __slots__ = ("done", "error", "lead", "result", "statement")

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self.done = threading.Event()
        self.result: Any = _PENDING
        self.error: BaseException | None = None
        self.lead = False  # set when the call is handed a lane instead of a result


class Batcher(Generic[T]):
    """Run calls of one operation singly while lanes are free, combined when they are not.

    Args:
        single: Runs one statement, returns its result.
        combined: Runs many statements as one, returns one result per statement.
        size: The payload bytes of a statement, to cap combined statements.
        lanes: How many calls (single or combined) may run at once.
    """

    def __init__(
        self,
        single: Callable[[Statement], T],
        combined: Callable[[Sequence[Statement]], list[T]],
        size: Callable[[Statement], int],
        lanes: int,
    ) -> None:
        self._single = single
        self._combined = combined
        self._size = size
        self._lanes = lanes
        self._busy = 0
        self._queue: collections.deque[_Request] = collections.deque()
        self._lock = threading.Lock()

    def submit(self, statement: Statement) -> T:
        """Run `statement`, alone or combined with concurrent ones; return its result.

        Args:
            statement: What a single call would run.

        Returns:
            Its result.

        Raises:
            DatabaseError: If the database failed (for this statement).
        """
        with self._lock:
            if self._busy < self._lanes:
                self._busy += 1
                request = None
            else:
                request = _Request(statement)
                self._queue.append(request)
        if request is None:
            try:
                return self._single(statement)
            finally:
                self._release()
        request.done.wait()
        if request.lead:
            self._serve(request)
        if request.error is not None:
            raise request.error
        result: T = request.result
        return result

    def _release(self) -> None:
        """Hand the lane to the oldest queued call, or free it."""
        with self._lock:
            if not self._queue:
                self._busy -= 1
                return
            heir = self._queue.popleft()
        heir.lead = True
        heir.done.set()

    def _take(self, first: _Request) -> list[_Request]:
        with self._lock:
            return take_batch(first, self._queue, _statement, self._size)

    def _serve(self, leader: _Request) -> None:
        batch = self._take(leader)
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
            self._release()
            for request in batch[1:]:
                request.done.set()

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


def _statement(request: _Request) -> Statement:
    return request.statement
