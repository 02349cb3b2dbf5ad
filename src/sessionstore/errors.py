"""The exceptions sessionstore raises.

Bad arguments raise the built-in `TypeError` and `ValueError`, before any SQL runs.
A failure of the database, the network or the pool raises `DatabaseError`, with the
original psycopg exception kept as ``__cause__``; it is never turned into "not found".
No message ever contains a session token or payload.
"""

from __future__ import annotations

import psycopg


class SessionStoreError(Exception):
    """Base class of the exceptions raised by sessionstore."""


class DatabaseError(SessionStoreError):
    """A store operation failed in the database, the network or the pool.

    The psycopg exception (including ``psycopg_pool.PoolTimeout``) is chained as
    ``__cause__``.

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
        # The primary message only: DETAIL lines can quote row values, i.e. tokens.
        message = cause.diag.message_primary or (str(cause).strip().splitlines() or [""])[0]
        text = f"{operation} failed: {type(cause).__name__}: {message}"
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)


class ForkedProcessError(SessionStoreError):
    """A store created before `os.fork` was used in the child process.

    Create a new pool and store in the child; the parent's keep working.
    """
