"""What the cleanup strategies share: options, the schedule, the record of runs (no SQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._cancel import Cancellation

logger = logging.getLogger("sessionstore.cleanup")

#: The default time between two purges: 5 minutes, as in SCS.
DEFAULT_INTERVAL = 300.0

#: How long `stop` waits for the worker to end before it logs and returns.
DEFAULT_STOP_TIMEOUT = 1.0

ErrorCallback = Callable[[BaseException], object]


class Openable(Protocol):
    """A pool, as far as a strategy looks at it."""

    @property
    def closed(self) -> bool:
        """Whether the pool is not open (not yet, or any more)."""


class SyncPurger(Protocol):
    """What a sync strategy needs from its store (`Store` is one)."""

    @property
    def name(self) -> str:
        """A name for the store's table, fit for logs and thread names."""

    @property
    def pool(self) -> Openable:
        """The store's pool: no purge is tried while it is not open."""

    def try_purge_expired(
        self, *, batch_size: int | None = None, cancel: Cancellation | None = None
    ) -> int | None:
        """Delete expired sessions; how many, or None if another purge was running."""


class AsyncPurger(Protocol):
    """What an async strategy needs from its store (`AsyncStore` is one)."""

    @property
    def name(self) -> str:
        """A name for the store's table, fit for logs and task names."""

    async def try_purge_expired(
        self, *, batch_size: int | None = None, cancel: Cancellation | None = None
    ) -> int | None:
        """Delete expired sessions; how many, or None if another purge was running."""


@dataclass(frozen=True, slots=True)
class CleanupStats:
    """What a cleanup strategy has done so far; the fields: docs/cleanup.md#statistics."""

    runs: int = 0
    rows_deleted: int = 0
    skipped: int = 0
    errors: int = 0
    last_run: dt.datetime | None = None
    last_duration: float | None = None
    last_error: BaseException | None = None


def to_seconds(value: float | dt.timedelta, what: str) -> float:
    """An interval option (seconds or a timedelta) in seconds; TypeError if neither."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be seconds or a timedelta, not {type(value).__name__}")
    return float(value)


class Schedule:
    """The options (docs/cleanup.md#options, with their errors) and the record of a strategy."""

    def __init__(
        self,
        interval: float | dt.timedelta = DEFAULT_INTERVAL,
        *,
        jitter: float = 0.0,
        run_on_start: bool = False,
        on_error: ErrorCallback | None = None,
        stop_timeout: float | dt.timedelta = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.interval = to_seconds(interval, "interval")
        if not self.interval > 0:
            raise ValueError(
                f"interval must be positive, got {self.interval}; "
                "to disable cleanup pass cleanup=NoCleanup()"
            )
        if isinstance(jitter, bool) or not isinstance(jitter, int | float):
            raise TypeError(f"jitter must be a number, not {type(jitter).__name__}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
        self.jitter = float(jitter)
        self.run_on_start = bool(run_on_start)
        if on_error is not None and not callable(on_error):
            raise TypeError("on_error must be callable")
        self.on_error = on_error
        self.stop_timeout = to_seconds(stop_timeout, "stop_timeout")
        self._stats = CleanupStats()
        self._stats_lock = threading.Lock()
        self._store: weakref.ref[SyncPurger | AsyncPurger] | None = None
        self._attach_lock = threading.Lock()

    @property
    def stats(self) -> CleanupStats:
        """A snapshot of what this strategy has done."""
        return self._stats

    def attach(self, store: SyncPurger | AsyncPurger) -> None:
        """Claim this strategy for `store` (the store does, when it is made).

        Raises:
            RuntimeError: If this strategy already serves another store.
        """
        with self._attach_lock:
            if self._store is not None and self._store() is not store:
                raise RuntimeError(
                    f"this {type(self).__name__} is already used by another store; "
                    "create one cleanup strategy per store"
                )
            self._store = weakref.ref(store)

    def _next_delay(self) -> float:
        if not self.jitter:
            return self.interval
        spread = self.interval * self.jitter
        return max(0.0, self.interval + random.uniform(-spread, spread))

    def _record(
        self,
        name: str,
        clock: tuple[dt.datetime, float],
        deleted: int | None,
        exc: BaseException | None = None,
    ) -> None:
        """Count a purge that started at `clock` (`_clock`): `deleted` rows, None if skipped."""
        duration = time.perf_counter() - clock[1]
        with self._stats_lock:
            s = self._stats
            self._stats = dataclasses.replace(
                s,
                runs=s.runs + 1,
                rows_deleted=s.rows_deleted + (deleted or 0),
                skipped=s.skipped + (deleted is None and exc is None),
                errors=s.errors + (exc is not None),
                last_run=clock[0],
                last_duration=duration,
                last_error=exc,
            )
        if exc is not None:
            # The store's exceptions never carry tokens or payloads: the message is safe.
            logger.error("purge of %s failed, retrying in %g s: %s", name, self.interval, exc)
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    logger.exception("on_error callback of the %s cleanup raised", name)
        elif deleted is None:
            logger.debug("purge of %s skipped: another store is purging it", name)
        elif deleted:
            logger.info("purged %d expired sessions from %s in %.3f s", deleted, name, duration)

    @staticmethod
    def _clock() -> tuple[dt.datetime, float]:
        return dt.datetime.now(dt.UTC), time.perf_counter()
