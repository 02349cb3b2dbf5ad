"""The exceptions sessionstore raises.

Bad arguments raise the built-in `TypeError` and `ValueError`, before any SQL runs.
A failure of the database, the network or the pool raises `DatabaseError`, with the
original psycopg exception kept as ``__cause__``; it is never turned into "not found".
No message ever contains a session token or payload.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool


class SessionStoreError(Exception):
    """Base class of the exceptions raised by sessionstore."""


def first_line(exc: BaseException) -> str:
    """What to show of an error in one line: its primary message.

    For a psycopg error that is PostgreSQL's primary message when the server sent
    one, else the first line of the text (libpq's connection errors go on with
    hints). Never the DETAIL lines: they can quote row values, i.e. tokens.

    Args:
        exc: The error.

    Returns:
        The line, or the exception's type name if it has no message.
    """
    primary = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
    lines = str(exc).strip().splitlines()
    return primary or (lines[0].strip() if lines else "") or type(exc).__name__


class DatabaseError(SessionStoreError):
    """A store operation failed in the database, the network or the pool.

    The psycopg exception (including ``psycopg_pool.PoolTimeout``) is chained as
    ``__cause__``, its message cut to the primary line (its ``diag`` is intact).

    Attributes:
        operation: The store operation that failed, e.g. ``"find"``.
        sqlstate: PostgreSQL's SQLSTATE code when the server reported the error,
            else None (connection failures, pool timeouts).
    """

    operation: str
    sqlstate: str | None

    def __init__(self, operation: str, cause: psycopg.Error, hint: str = "") -> None:
        self.operation = operation
        self.sqlstate = cause.sqlstate
        # The cause goes into tracebacks and logs: keep only its primary message,
        # since PostgreSQL's DETAIL and CONTEXT lines can quote a row, token and all
        # ("Key (token)=(...) already exists", "Failing row contains (...)").
        cause.args = (first_line(cause),)
        self._cause = cause
        self._hint = hint
        message = first_line(cause)
        text = f"{operation} failed: {type(cause).__name__}: {message}"
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)

    @property
    def cause(self) -> psycopg.Error:
        """The psycopg exception this error wraps (its ``__cause__`` once raised)."""
        return self._cause

    def for_another_caller(self) -> DatabaseError:
        """The same error, as a new instance to raise in another thread or task.

        When one combined statement fails for several callers, each gets its own
        instance: one exception object raised in several places at once would have
        its traceback rewritten under the others' feet.

        Returns:
            A new `DatabaseError` with the same operation, cause and message.
        """
        copy = DatabaseError(self.operation, self._cause, self._hint)
        copy.__cause__ = self._cause
        return copy


class OwnersNotEnabledError(SessionStoreError):
    """A per-owner operation was called on a store made without ``owners=True``.

    Sessions per user need the table's ``owner`` column: create the store with
    ``owners=True`` (and add the column with ``python -m sessionstore migrate
    --owners``).
    """

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"{operation} needs sessions per owner: create the store with owners=True "
            "(and add the column with `python -m sessionstore migrate --owners`)"
        )
        self.operation = operation


class ConcurrentUpdateError(SessionStoreError):
    """A session's save lost the race to other requests' writes too often; nothing was written.

    The session manager merges and tries again after each write another request
    made meanwhile (see docs/sessions.md); it gives up after 16 in one save.
    """


class ForkedProcessError(SessionStoreError):
    """A store created before `os.fork` was used in the child process.

    Create a new pool and store in the child; the parent's keep working.
    """


#: Failures a retry can't fix, or must not repeat: never retried, even on a broken
#: connection. They all subclass OperationalError, so "retry on OperationalError"
#: would be wrong.
NEVER_RETRY: tuple[type[Exception], ...] = (
    psycopg.errors.QueryCanceled,
    psycopg.errors.DataError,
    psycopg.errors.ProgramLimitExceeded,
    psycopg_pool.PoolTimeout,
)


def should_retry(exc: psycopg.Error, conn: psycopg.BaseConnection[Any] | None) -> bool:
    """Whether a failed store operation may be run again.

    Only when the connection itself broke (a server restart, a terminated
    backend, a dropped network): every store operation is idempotent, and a
    fresh connection will likely work.

    Args:
        exc: What the operation raised.
        conn: The connection it ran on, or None if none was obtained.

    Returns:
        True to run it again.
    """
    return conn is not None and conn.broken and not isinstance(exc, NEVER_RETRY)
