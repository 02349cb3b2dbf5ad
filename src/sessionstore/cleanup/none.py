"""`NoCleanup`: the store never purges by itself."""

from __future__ import annotations

from ._schedule import AsyncPurger, CleanupStats, SyncPurger


class NoCleanup:
    """Disable automatic cleanup, for `Store` and `AsyncStore` alike.

    Use it when expired sessions are purged elsewhere: by one designated
    instance, from cron with ``python -m sessionstore purge``, or by calling
    `Store.purge_expired` yourself; and in tests.
    """

    def start(self, store: SyncPurger | AsyncPurger) -> None:
        """Do nothing: there is no worker to start."""

    def stop(self) -> None:
        """Do nothing: there is no worker to stop."""

    async def astop(self) -> None:
        """Do nothing: there is no worker to stop."""

    @property
    def running(self) -> bool:
        """Always False."""
        return False

    @property
    def stats(self) -> CleanupStats:
        """Always empty: this strategy never purges."""
        return CleanupStats()
