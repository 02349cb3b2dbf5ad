"""What the stores report about their own work: durations, batch sizes, retries, purges.

A store's ``on_operation`` picks its recorder: OpenTelemetry's by default (if installed),
a plain callable, or a `Recorder`. See docs/operations.md#metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core import Result, Statement, Steps
from ..errors import DatabaseError

if TYPE_CHECKING:
    from ._otel import OpenTelemetryRecorder

logger = logging.getLogger("sessionstore.metrics")

__all__ = ["OnOperation", "OpenTelemetryRecorder", "Recorder", "error_type"]

#: The neutral hook: ``(operation, seconds, error_type or None)``, after each operation.
OnOperation = Callable[[str, float, "str | None"], None]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing this package never imports opentelemetry.
    if name == "OpenTelemetryRecorder":
        from ._otel import OpenTelemetryRecorder

        return OpenTelemetryRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Recorder:
    """The base of recorders: subclass it to receive everything a store reports.

    A plain ``on_operation`` callable receives only `__call__`'s arguments; the other
    methods do nothing here. They run on the caller's thread or task, right after the
    work they describe: keep them quick, and don't let them raise.
    """

    def for_store(self, collection: str) -> Recorder:
        """The recorder for the store of table `collection` (unquoted, ``app.sessions``).

        Called once per store; returns this recorder by default.
        """
        return self

    def __call__(self, operation: str, seconds: float, error_type: str | None) -> None:
        """An operation ended after `seconds`, retries included (a combined statement is one).

        `error_type` is None on success, else `error_type` of the exception.
        """

    def batch(self, operation: str, size: int) -> None:
        """A combined ``find``, ``commit`` or ``touch`` is about to serve `size` (2+) calls."""

    def retry(self, operation: str) -> None:
        """A statement of `operation` met a broken connection and runs again on another one."""

    def purge(self, rows: int | None, rounds: int) -> None:
        """A purge (the cleanup's too) ran `rounds` statements and deleted `rows` sessions.

        `rows` is None if the purge was skipped: another purge of the table was running.
        """


class _Hook(Recorder):
    """A plain ``on_operation`` callable, as a recorder."""

    __slots__ = ("_hook",)

    def __init__(self, hook: OnOperation) -> None:
        self._hook = hook

    def __call__(self, operation: str, seconds: float, error_type: str | None) -> None:
        try:
            self._hook(operation, seconds, error_type)
        except Exception:
            # A metrics bug must not fail (or lose the result of) a session operation.
            logger.exception("on_operation hook failed for %s", operation)


_otel_missing = False


def recorder_for(
    on_operation: OnOperation | None, schema: str | None, table: str
) -> Recorder | None:
    """The recorder of a store built with `on_operation`, or None if nothing records.

    Raises TypeError if `on_operation` is neither None nor callable.
    """
    global _otel_missing
    # db.collection.name: as the conventions ask, unquoted and dotted.
    collection = table if schema is None else f"{schema}.{table}"
    if isinstance(on_operation, Recorder):
        return on_operation.for_store(collection)
    if on_operation is not None:
        if not callable(on_operation):
            raise TypeError(f"on_operation must be a callable, not {type(on_operation).__name__}")
        return _Hook(on_operation)
    if _otel_missing:  # remembered: a failed import searches sys.path again every time
        return None
    try:
        from ._otel import OpenTelemetryRecorder
    except ImportError:
        _otel_missing = True
        return None
    return OpenTelemetryRecorder().for_store(collection)


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of a failure: the SQLSTATE, else the exception's qualified class.

    E.g. ``"42P01"`` or ``"psycopg.OperationalError"``, as OpenTelemetry's database
    conventions ask; never the message, which may quote a value.
    """
    if isinstance(exc, DatabaseError):
        if exc.sqlstate:
            return exc.sqlstate
        exc = exc.cause  # the psycopg error it wraps (its __cause__ when raised)
    kind = type(exc)
    module = kind.__module__
    # psycopg's classes live in private modules (psycopg.errors is public).
    if module.startswith("psycopg.") and module != "psycopg.errors":
        module = "psycopg"
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


class Measure:
    """Times one operation for a recorder, with the error type if the block raised.

    Without a recorder it times, counts and records nothing.
    """

    __slots__ = ("_operation", "_recorder", "_start", "rounds")

    def __init__(self, recorder: Recorder | None, operation: str) -> None:
        self._recorder = recorder
        self._operation = operation
        self._start = 0.0
        self.rounds = 0

    def __enter__(self) -> Measure:
        if self._recorder is not None:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._recorder is not None:
            exc = exc_info[1]
            error = error_type(exc) if isinstance(exc, BaseException) else None
            self._recorder(self._operation, time.perf_counter() - self._start, error)

    def steps(self, steps: Steps) -> Steps:
        """`steps`, counting the statements it yields into `rounds` (with a recorder)."""
        return steps if self._recorder is None else self._counted(steps)

    def _counted(self, steps: Steps) -> Steps:
        # By hand rather than `yield from`, which hides each yield from the counter.
        try:
            statement: Statement = next(steps)
            while True:
                self.rounds += 1
                result: Result = yield statement
                statement = steps.send(result)
        except StopIteration as done:
            return done.value

    def purged(self, rows: int | None) -> None:
        """Report the purge's outcome (rows deleted, or None if skipped)."""
        if self._recorder is not None:
            self._recorder.purge(rows, self.rounds)


#: ``with measure(recorder, "purge") as measured:``
measure = Measure
