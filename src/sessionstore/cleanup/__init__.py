"""Cleanup of expired sessions, as a strategy the store is given.

Strategies decide *when* to purge; the store decides *how* (`Store.purge_expired`).

- `ThreadCleanup`: a daemon thread, the default for `Store`.
- `TaskCleanup`: an asyncio task, the default for `AsyncStore`.
- `NoCleanup`: never; purge from cron (``python -m sessionstore purge``) or by hand.

Any object with the methods of `CleanupStrategy` (sync) or `AsyncCleanupStrategy`
can be passed instead.
"""

from __future__ import annotations

from typing import Protocol

from ._cancel import Cancellation, cancelling
from ._schedule import AsyncPurger, CleanupStats, SyncPurger
from .none import NoCleanup
from .task import TaskCleanup
from .thread import ThreadCleanup

__all__ = [
    "AsyncCleanupStrategy",
    "AsyncPurger",
    "Cancellation",
    "CleanupStats",
    "CleanupStrategy",
    "NoCleanup",
    "SyncPurger",
    "TaskCleanup",
    "ThreadCleanup",
    "cancelling",
]


class CleanupStrategy(Protocol):
    """What `Store` needs of a cleanup strategy."""

    def start(self, store: SyncPurger) -> None:
        """Begin purging `store` on a schedule; the store calls this once per process."""

    def stop(self) -> None:
        """Stop purging; idempotent, returns once the worker has ended."""


class AsyncCleanupStrategy(Protocol):
    """What `AsyncStore` needs of a cleanup strategy."""

    def start(self, store: AsyncPurger) -> None:
        """Begin purging `store` on the running loop; called once, by the store."""

    async def astop(self) -> None:
        """Stop purging; idempotent, returns once the worker has ended."""
