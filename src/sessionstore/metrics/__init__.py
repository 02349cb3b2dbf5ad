"""What the stores report about their own work: durations, batch sizes, retries, purges.

Every store holds one recorder, chosen when it is built (`recorder_for`):

- ``on_operation=None`` (the default): OpenTelemetry's, if ``opentelemetry-api`` is
  installed (the ``otel`` extra), recording through the application's global meter
  provider; otherwise none at all, and the store then runs exactly the code it runs
  without this package (nothing is imported, nothing is timed).
- ``on_operation=callable``: the callable alone, called after each operation with
  ``(operation, seconds, error_type)``, for those who use neither OpenTelemetry nor
  Prometheus (statsd, logs, a test).
- ``on_operation=OpenTelemetryRecorder(meter_provider=...)``: OpenTelemetry on an
  explicit meter provider rather than the global one.

A `Recorder` subclass also receives what does not fit the three-argument call:
combined-statement sizes, retries after a broken connection and purge details.
Tokens never reach a recorder: it is given operation names, durations, the error's
type (a SQLSTATE or an exception class), counts, and the table's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
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

    A plain callable passed as ``on_operation`` receives only `__call__`'s
    arguments; a subclass may override the other methods too (they do nothing
    here). The methods run on the caller's thread or task, right after the work
    they describe: keep them quick, and let them not raise (a store logs and
    swallows what a plain callable raises, never failing the operation for it).
    """

    def for_store(self, collection: str) -> Recorder:
        """The recorder a store uses; called once per store with its table.

        Args:
            collection: The table's name, schema-qualified if a schema is set
                (``app.sessions``), unquoted.

        Returns:
            A recorder for that store (this one by default).
        """
        return self

    def __call__(self, operation: str, seconds: float, error_type: str | None) -> None:
        """One operation ended.

        Args:
            operation: The store's operation: ``find``, ``commit``, ``touch``,
                ``create``, ``delete``, ``exists``, ``expiry``, ``all``,
                ``iter_all``, ``set_owner``, ``sessions_of``, ``delete_owned``,
                ``revoke``, ``purge``, ``clear``, ``reencrypt`` or ``create_table``.
            seconds: How long it took, retries included (one combined statement
                is one operation).
            error_type: None on success; else the SQLSTATE the server reported
                (``42P01``), or the exception's qualified class name
                (``psycopg.OperationalError``) when there is none.
        """

    def batch(self, operation: str, size: int) -> None:
        """A combined statement is about to run for `size` concurrent calls.

        Args:
            operation: ``find``, ``commit`` or ``touch``.
            size: How many calls the one statement serves (2 or more).
        """

    def retry(self, operation: str) -> None:
        """A statement met a broken connection and runs again on another one.

        Args:
            operation: The operation being retried.
        """

    def purge(self, rows: int | None, rounds: int) -> None:
        """A purge (`try_purge_expired`, hence the cleanup's too) ended without error.

        Args:
            rows: How many expired sessions it deleted; None if it was skipped
                because another purge of the table was running.
            rounds: How many purge statements it ran.
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
    """The recorder a store built with `on_operation` uses, or None for none.

    Args:
        on_operation: The store's ``on_operation`` argument.
        schema: The store's schema, or None.
        table: The store's table.

    Returns:
        The recorder, or None when there is nothing to record to.

    Raises:
        TypeError: If `on_operation` is neither None nor callable.
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
    """The ``error.type`` of a failure: the SQLSTATE, else the exception's class.

    OpenTelemetry's database conventions ask for the status code when the
    database reported one, else the exception's fully qualified class name. The
    message is never used: it may quote a value.

    Args:
        exc: The exception the operation raised.

    Returns:
        E.g. ``"42P01"`` or ``"psycopg.OperationalError"``.
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
    """Times one operation for a recorder: ``with measure(recorder, "purge") as m:``.

    Records the duration and the error type (if the block raised) on exit; a
    multi-statement operation wraps its steps with `steps` to count statements.
    """

    __slots__ = ("_operation", "_recorder", "_start", "rounds")

    def __init__(self, recorder: Recorder, operation: str) -> None:
        self._recorder = recorder
        self._operation = operation
        self._start = 0.0
        self.rounds = 0

    def __enter__(self) -> Measure:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._start
        error = None if exc_value is None else error_type(exc_value)
        self._recorder(self._operation, seconds, error)

    def steps(self, steps: Steps) -> Steps:
        """`steps`, counting the statements it yields into `rounds`."""
        return self._counted(steps)

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
        self._recorder.purge(rows, self.rounds)


class _NoMeasure(Measure):
    """What `measure` gives without a recorder: records nothing, counts nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def __enter__(self) -> Measure:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def steps(self, steps: Steps) -> Steps:
        """`steps` unchanged."""
        return steps

    def purged(self, rows: int | None) -> None:
        """Nothing to report to."""


_NO_MEASURE = _NoMeasure()


def measure(recorder: Recorder | None, operation: str) -> Measure:
    """A context manager timing `operation` for `recorder` (a no-op for None).

    Args:
        recorder: The store's recorder, or None.
        operation: The operation's name.

    Returns:
        The context manager; its `Measure.steps` and `Measure.purged` report
            purge details.
    """
    return _NO_MEASURE if recorder is None else Measure(recorder, operation)
