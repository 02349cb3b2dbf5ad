"""`Store`: the session store for threaded code, on a `psycopg_pool.ConnectionPool`.

A thin facade over the sans-IO core: every method validates and builds its SQL in
`SessionCore`, borrows a pooled connection to run it, and hands the rows back to the
core. `store_async.py` mirrors this file method for method.
"""

from __future__ import annotations

import datetime as dt
from types import TracebackType
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ._core import DEFAULT_MAX_DATA_SIZE, DEFAULT_TABLE, Result, SessionCore, Statement, Steps
from .cleanup import CleanupStrategy, ThreadCleanup
from .errors import DatabaseError
from .schema import create_table_steps

__all__ = ["Store"]


class Store:
    """A PostgreSQL session store, the Python port of SCS's pgxstore.

    Expiry is judged by the database's clock. The store never closes `pool`.

    Args:
        pool: The connection pool to borrow connections from. An autocommit pool
            (``kwargs={"autocommit": True}``) saves a round trip per operation.
        table: The sessions table's name (any text: it is always quoted).
        schema: The table's schema, or None to follow the search_path.
        cleanup: When to purge expired sessions: `ThreadCleanup` every 5
            minutes by default; pass `NoCleanup` to disable it.
        max_data_size: The largest payload `commit` accepts, in bytes
            (default 64 MiB; PostgreSQL's own limit is 1 GiB).

    Raises:
        TypeError: If `pool` is not a `ConnectionPool`, or an option has the
            wrong type.
        ValueError: If a name or size is invalid.
    """

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        cleanup: CleanupStrategy | None = None,
        max_data_size: int = DEFAULT_MAX_DATA_SIZE,
    ) -> None:
        if not isinstance(pool, ConnectionPool):
            hint = "; use AsyncStore" if isinstance(pool, AsyncConnectionPool) else ""
            raise TypeError(
                f"pool must be a psycopg_pool.ConnectionPool, not {type(pool).__name__}{hint}"
            )
        self._pool = pool
        self._core = SessionCore(table, schema, max_data_size)
        self._cleanup: CleanupStrategy = ThreadCleanup() if cleanup is None else cleanup
        self._cleanup.start(self)

    @property
    def name(self) -> str:
        """The quoted, schema-qualified name of the sessions table."""
        return self._core.qualified_name

    @property
    def cleanup(self) -> CleanupStrategy:
        """The cleanup strategy (its ``stats`` tell what it has done)."""
        return self._cleanup

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def find(self, token: str) -> bytes | None:
        """Return the data of a live session.

        Args:
            token: The session token.

        Returns:
            The session's data (``b""`` if empty), or None if the session is
            missing or expired.

        Raises:
            TypeError: If the token is not a str.
            ValueError: If the token is empty, too long, or contains NUL or lone
                surrogates.
            DatabaseError: If the database could not answer.
        """
        statement = self._core.find(token)
        try:
            with self._pool.connection() as conn:
                cursor = conn.cursor(binary=True, row_factory=tuple_row)
                cursor.execute(statement.query, statement.params)
                row = cursor.fetchone()
        except psycopg.Error as exc:
            raise DatabaseError("find", exc) from exc
        return self._core.decode_find(row)

    def commit(self, token: str, data: bytes | bytearray | memoryview, expiry: dt.datetime) -> None:
        """Save a session, replacing any with the same token (last writer wins).

        Args:
            token: The session token.
            data: The session's data.
            expiry: When the session expires: a timezone-aware datetime.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If the token is invalid, the data is larger than
                `max_data_size`, or the expiry is naive.
            DatabaseError: If the database could not save it.
        """
        self._execute("commit", self._core.commit(token, data, expiry))

    def delete(self, token: str) -> None:
        """Delete a session; a missing token is not an error.

        Args:
            token: The session token.

        Raises:
            TypeError: If the token is not a str.
            ValueError: If the token is invalid.
            DatabaseError: If the database could not delete it.
        """
        self._execute("delete", self._core.delete(token))

    def all(self) -> dict[str, bytes]:
        """Return every live session.

        Returns:
            A new dict of token to data; empty if there are none.

        Raises:
            DatabaseError: If the database could not answer.
        """
        statement = self._core.all()
        try:
            with self._pool.connection() as conn:
                cursor = conn.cursor(binary=True, row_factory=tuple_row)
                rows = cursor.execute(statement.query).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError("all", exc) from exc
        return self._core.decode_all(rows)

    def purge_expired(self) -> int:
        """Delete every expired session now.

        Returns:
            How many sessions were deleted.

        Raises:
            DatabaseError: If the database could not delete them.
        """
        return self._execute("purge_expired", self._core.purge_expired())

    def create_table(self) -> bool:
        """Create the schema, table and index if missing; never called implicitly.

        Idempotent, and safe when several processes run it at once. On an existing
        table it only reads the catalog, so it needs no DDL rights.

        Returns:
            True if anything was created, False if all of it existed.

        Raises:
            DatabaseError: If the database refused (e.g. no CREATE rights while
                something is missing).
        """
        return bool(self._run("create_table", create_table_steps(self._core)))

    def stop_cleanup(self) -> None:
        """Stop the cleanup worker and wait for it (within its bound).

        Idempotent and safe from any thread or task; the store's other methods go on working.
        """
        self._cleanup.stop()

    def close(self) -> None:
        """Stop the cleanup worker. The pool stays open: it is the caller's."""
        self.stop_cleanup()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Private: the only places that borrow connections.

    def _execute(self, operation: str, statement: Statement) -> int:
        try:
            with self._pool.connection() as conn:
                cursor = conn.execute(statement.query, statement.params)
                return cursor.rowcount
        except psycopg.Error as exc:
            raise DatabaseError(operation, exc) from exc

    def _run(self, operation: str, steps: Steps) -> Any:
        """Drive a multi-statement core generator inside one transaction."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                statement = next(steps)
                while True:
                    cursor = conn.cursor(row_factory=tuple_row)
                    cursor.execute(statement.query, statement.params)
                    rows = cursor.fetchall() if cursor.description else []
                    try:
                        statement = steps.send(Result(rows, cursor.rowcount))
                    except StopIteration as done:
                        return done.value
        except psycopg.Error as exc:
            raise DatabaseError(operation, exc) from exc
