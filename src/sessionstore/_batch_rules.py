"""The rules both batchers follow, written once.

`_batch.py` (threads) and `_batch_async.py` (asyncio) hand lanes from caller to caller
with different primitives, so they stay two hand-written files; what a batch may hold
and what happens when a combined statement fails are the same for both, and live here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TypeVar

from ._core import MAX_BATCH, MAX_BATCH_BYTES, Statement
from .errors import DatabaseError

R = TypeVar("R")


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
