"""`ThreadCleanup`: purge expired sessions from a daemon thread (for `Store`)."""

from __future__ import annotations

import threading
import time
import weakref

from .. import _fork
from ._cancel import Cancellation
from ._schedule import Schedule, SyncPurger, logger


class ThreadCleanup(Schedule):
    """Purge a `Store`'s expired sessions every `interval`, from a daemon thread.

    The thread holds its store weakly: a store dropped without `Store.close`
    lets the thread end (with a warning in the log) instead of keeping it alive.
    A failed purge is logged on ``sessionstore.cleanup``, passed to `on_error`,
    and tried again at the next interval; it never ends the loop.

    Args:
        interval: Time between purges, in seconds or as a timedelta (default 5 min).
        jitter: Spread each wait at random by up to this fraction of the interval.
        run_on_start: Purge as soon as the store is created.
        on_error: Called with each purge's exception, from the cleanup thread.
        stop_timeout: How long `stop` waits for the thread, in seconds.

    Raises:
        ValueError: If `interval` is not positive (use `NoCleanup` instead).
    """

    _thread: threading.Thread | None = None
    _stopping: Cancellation
    _ref: weakref.ref[SyncPurger]
    _dropped: weakref.finalize[[Cancellation, str], SyncPurger] | None = None

    def start(self, store: SyncPurger) -> None:
        """Start the cleanup thread for `store`. The store calls this.

        Args:
            store: The store to purge.

        Raises:
            RuntimeError: If this strategy already serves a store.
        """
        self._attach()
        self._launch(store)
        # A thread does not survive os.fork: see _after_fork_in_child.
        _fork.track(self._after_fork_in_child)

    def _launch(self, store: SyncPurger) -> None:
        """Start the thread that purges `store`."""
        self._stopping = Cancellation()
        self._ref = ref = weakref.ref(store)
        name = store.name
        self._thread = threading.Thread(
            target=self._run, args=(ref, name), name=f"sessionstore-cleanup {name}", daemon=True
        )
        if self._dropped is not None:  # the parent's, inherited through a fork
            self._dropped.detach()
        self._dropped = weakref.finalize(store, _store_dropped, self._stopping, name)
        self._thread.start()

    def _after_fork_in_child(self, _stand_in: object) -> None:
        """Start the cleanup again in a child whose store works (its pool was not open).

        ``gunicorn --preload`` makes the store in the master, whose thread stays
        there; each worker opens the pool and gets a thread of its own.
        """
        store = self._ref()
        if store is not None and not self._stopping.cancelled and store.pool.closed:
            self._launch(store)

    def stop(self) -> None:
        """Stop the thread and wait for it, up to `stop_timeout` seconds.

        A purge in progress is cancelled, its running statement on the server too,
        so this returns at once rather than after the purge. Idempotent, and safe
        to call from any thread, many at once. A thread still alive at the bound
        is logged (it is a daemon, and ends when its statement does).
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping.cancel()
        if thread is threading.current_thread():
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

    def _run(self, ref: weakref.ref[SyncPurger], name: str) -> None:
        delay = 0.0 if self.run_on_start else self._next_delay()
        while not self._stopping.wait(delay):
            delay = self._next_delay()  # rescheduled first: a failure can't end the loop
            store = ref()
            if store is None:
                return
            if store.pool.closed:  # not open yet (or any more): nothing to purge with
                logger.debug("%s: the pool is not open; purge skipped", name)
                continue
            started, t0 = self._clock()
            try:
                deleted = store.try_purge_expired(cancel=self._stopping)
            except Exception as exc:
                if self._stopping.cancelled:
                    return  # the purge was cancelled by stop(): not a failure
                self._record_error(name, started, time.perf_counter() - t0, exc)
            else:
                self._record(name, started, time.perf_counter() - t0, deleted)
            del store


def _store_dropped(stopping: Cancellation, name: str) -> None:
    if not stopping.cancelled:
        stopping.cancel()
        logger.warning("store for %s was garbage-collected without close(); cleanup stopped", name)
