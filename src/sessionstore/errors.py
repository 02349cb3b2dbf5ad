"""The exceptions sessionstore raises; see docs/usage.md#database-errors."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool


class SessionStoreError(Exception):
    """Base class of the exceptions raised by sessionstore."""


def first_line(exc: BaseException) -> str:
    """An error in one line, never its DETAIL lines (they can quote tokens).

    PostgreSQL's primary message, else the text's first line, else the type's name.
    """
    primary = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
    lines = str(exc).strip().splitlines()
    return primary or (lines[0].strip() if lines else "") or type(exc).__name__


class DatabaseError(SessionStoreError):
    """A store operation failed in the database, the network or the pool.

    The psycopg exception (`psycopg_pool.PoolTimeout` included) is ``__cause__``,
    its message cut to the primary line (its ``diag`` is intact).

    Attributes:
        operation: The store operation that failed, e.g. ``"find"``.
        sqlstate: PostgreSQL's SQLSTATE code, or None when no server reported the
            error (connection failures, pool timeouts).
        cause: The psycopg exception it wraps (its ``__cause__`` once raised).
    """

    def __init__(self, operation: str, cause: psycopg.Error, hint: str = "") -> None:
        self.operation = operation
        self.sqlstate = cause.sqlstate
        # The cause goes into tracebacks and logs: PostgreSQL's DETAIL and CONTEXT
        # lines can quote a row, token and all ("Key (token)=(...) already exists").
        message = first_line(cause)
        cause.args = (message,)
        self.cause = cause
        self._hint = hint
        text = f"{operation} failed: {type(cause).__name__}: {message}"
        super().__init__(f"{text} ({hint})" if hint else text)

    def for_another_caller(self) -> DatabaseError:
        """The same error as a new instance, for each caller of one failed combined statement.

        One exception object raised in several threads or tasks at once would have its
        traceback rewritten under the others' feet.
        """
        copy = DatabaseError(self.operation, self.cause, self._hint)
        copy.__cause__ = self.cause
        return copy


class OwnersNotEnabledError(SessionStoreError):
    """A per-owner operation was called on a store made without ``owners=True``."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"{operation} needs sessions per owner: create the store with owners=True "
            "(and add the column with `python -m sessionstore migrate --owners`)"
        )
        self.operation = operation


class ConcurrentUpdateError(SessionStoreError):
    """A session's save lost the race to other requests' writes too often; nothing was written.

    The session manager merges and retries after each concurrent write, up to 16 times
    in one save (docs/sessions.md).
    """


class ForkedProcessError(SessionStoreError):
    """A store created before `os.fork` was used in the child process."""


#: Never retried, even on a broken connection: a retry can't fix them, or must not
#: repeat them. They all subclass OperationalError, hence the list.
NEVER_RETRY: tuple[type[Exception], ...] = (
    psycopg.errors.QueryCanceled,
    psycopg.errors.DataError,
    psycopg.errors.ProgramLimitExceeded,
    psycopg_pool.PoolTimeout,
)


def should_retry(exc: psycopg.Error, conn: psycopg.BaseConnection[Any] | None) -> bool:
    """Whether a failed (idempotent) store operation may run again: only if its connection broke."""
    return conn is not None and conn.broken and not isinstance(exc, NEVER_RETRY)
