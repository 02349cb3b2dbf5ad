"""`Cancellation`: a thread-safe flag that also cancels what is running when set."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger("sessionstore.cleanup")


class Cancellation:
    """Ask a purge to stop: between batches, and by cancelling its running statement.

    A strategy passes one to the store's purge, which registers a callback that cancels
    its running statement on the server. `cancel` is safe from any thread, many times.
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
        """Sleep until cancelled (return True) or until `timeout` seconds passed."""
        return self._event.wait(timeout)

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], object]) -> Iterator[None]:
        """Run `callback` (e.g. ``conn.cancel``) if cancelled while the block runs, or at once."""
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
    """`cancel.on_cancel(callback)`, or nothing when there is no cancellation."""
    return contextlib.nullcontext() if cancel is None else cancel.on_cancel(callback)
