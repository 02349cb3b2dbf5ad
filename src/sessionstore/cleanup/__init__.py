"""Cleanup strategies: when a store purges its expired sessions (docs/cleanup.md).

`ThreadCleanup` (the default for `Store`), `TaskCleanup` (for `AsyncStore`), `NoCleanup`,
or any object with the methods of `CleanupStrategy` or `AsyncCleanupStrategy`.
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
