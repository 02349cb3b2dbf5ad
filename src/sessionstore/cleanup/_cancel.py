"""`Cancellation`: a thread-safe flag that also cancels what is running when set."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger("sessionstore.cleanup")


class Cancellation:
    """Ask a purge to stop: between batches, and by cancelling its running statement.

    A cleanup strategy creates one and passes it to the store's purge; the store
    registers a callback that cancels its connection's running statement on the
    server for as long as that statement runs. `cancel` may be called from any
    thread, any number of times.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Set the flag and run the registered callbacks (once)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            _run_quietly(callback)

    def wait(self, timeout: float) -> bool:
        """Sleep until cancelled or until `timeout` seconds passed.

        Args:
            timeout: The longest wait, in seconds.

        Returns:
            True if cancelled.
        """
        return self._event.wait(timeout)

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], object]) -> Iterator[None]:
        """Run `callback` if cancelled while the block runs (or at once, if already).

        Args:
            callback: What cancels the running work, e.g. ``conn.cancel_safe``.

        Yields:
            Nothing; leaving the block unregisters the callback.
        """
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._callbacks.append(callback)
        if already:
            _run_quietly(callback)
        try:
            yield
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)


def _run_quietly(callback: Callable[[], object]) -> None:
    # Cancelling is best effort: the statement may have just finished, or the
    # connection broken. The purge itself reports what happened.
    try:
        callback()
    except Exception as exc:
        logger.debug("cancelling a purge failed: %s", exc)


def cancelling(
    cancel: Cancellation | None, callback: Callable[[], object]
) -> contextlib.AbstractContextManager[None]:
    """`cancel.on_cancel(callback)`, or nothing when there is no cancellation.

    Args:
        cancel: The cancellation, or None.
        callback: What cancels the running work.

    Returns:
        A context manager for the block to cancel.
    """
    return contextlib.nullcontext() if cancel is None else cancel.on_cancel(callback)
