"""`ThreadCleanup`: purge expired sessions from a daemon thread (for `Store`)."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from .. import _fork
from ._cancel import Cancellation
from ._schedule import AsyncPurger, Schedule, SyncPurger, logger

if TYPE_CHECKING:
    from . import CleanupStrategy


class ThreadCleanup(Schedule):
    """Purge a `Store`'s expired sessions every `interval`, from a daemon thread.

    When the store starts it, its options, its failures and a store dropped without
    `Store.close`: docs/cleanup.md.

    Raises:
        ValueError: If `interval` is not positive (use `NoCleanup` instead).
    """

    _thread: threading.Thread | None = None
    _stopping: Cancellation | None = None

    def attach(self, store: SyncPurger | AsyncPurger) -> None:
        """Claim this strategy for `store`, and stop its thread when `store` is dropped."""
        super().attach(store)
        if self._stopping is None:  # made with the store, so atexit runs it after close()
            self._stopping = Cancellation()
            weakref.finalize(store, self._store_dropped, store.name)

    def start(self, store: SyncPurger) -> None:
        """Start the cleanup thread for `store`: once per process, the store calls this.

        Raises:
            RuntimeError: If this strategy already serves another store.
        """
        self.attach(store)
        if self._thread is not None:  # a forked child's: the parent's may be held
            self._stopping, self._stats_lock = Cancellation(), threading.Lock()
        assert self._stopping is not None
        name = store.name
        self._thread = threading.Thread(
            target=self._run,
            args=(weakref.ref(store), name, self._stopping),
            name=f"sessionstore-cleanup {name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, cancelling a purge in progress, and wait up to `stop_timeout` s."""
        thread = self._thread
        if self._stopping is not None:
            self._stopping.cancel()
        if thread is None or thread is threading.current_thread():
            return
        thread.join(self.stop_timeout)
        if thread.is_alive():
            logger.warning(
                "%s did not end within %.1f s (a purge is still running); leaving it",
                thread.name,
                self.stop_timeout,
            )

    @property
    def running(self) -> bool:
        """Whether the cleanup thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self, ref: weakref.ref[SyncPurger], name: str, stopping: Cancellation) -> None:
        delay = 0.0 if self.run_on_start else self._next_delay()
        while not stopping.wait(delay):
            delay = self._next_delay()  # rescheduled first: a failure can't end the loop
            store = ref()
            if store is None:
                return
            if store.pool.closed:  # not open yet (or any more): nothing to purge with
                logger.debug("%s: the pool is not open; purge skipped", name)
                continue
            clock = self._clock()
            try:
                deleted = store.try_purge_expired(cancel=stopping)
            except Exception as exc:
                if stopping.cancelled:
                    return  # the purge was cancelled by stop(): not a failure
                self._record(name, clock, None, exc)
            else:
                self._record(name, clock, deleted)
            del store

    def _store_dropped(self, name: str) -> None:
        stopping = self._stopping
        if stopping is not None and not stopping.cancelled:
            stopping.cancel()
            logger.warning(
                "store for %s was garbage-collected without close(); cleanup stopped", name
            )


class LazyStart:
    """Starts a `Store`'s cleanup: at once if its pool is open, else at its first operation.

    Why: docs/cleanup.md#threadcleanup. The store's hot path reads only `due`.
    """

    def __init__(self, strategy: CleanupStrategy, store: SyncPurger) -> None:
        if isinstance(strategy, Schedule):
            strategy.attach(store)  # a strategy given to a second store fails here
        self.due = True
        self._strategy = strategy
        self._store = weakref.ref(store)
        self._stopped = False
        self._lock = threading.Lock()
        _fork.track(self._after_fork_in_child)

    def start_if_open(self) -> None:
        """Start now if the pool is open (it runs threads of its own already)."""
        store = self._store()
        if store is not None and not store.pool.closed:
            self.start()

    def start(self) -> None:
        """Start the strategy, unless started in this process or stopped."""
        with self._lock:
            store = self._store()
            if self.due and store is not None:
                self.due = False
                self._strategy.start(store)

    def stop(self) -> None:
        """Never start again: the store stopped its cleanup."""
        with self._lock:
            self.due, self._stopped = False, True

    def _after_fork_in_child(self, _stand_in: object) -> None:
        """Start again at the child's first operation, if its store works (its pool was closed)."""
        store = self._store()
        self._lock = threading.Lock()
        self.due = not self._stopped and store is not None and store.pool.closed
