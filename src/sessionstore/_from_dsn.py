"""One-off jobs on a DSN: a store on a single connection, and creating the table.

The command line, the demo, the benchmarks and the pytest plugin's template database
all need "connect to this DSN, say clearly why not, and create the sessions table
through the product's own path" (`Store.create_table`, so the locking and the
catalog checks are the ones users get). This module is where that is written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

from ._core import DEFAULT_TABLE, Result, SessionCore, Steps
from .cleanup import NoCleanup
from .errors import DatabaseError, first_line
from .schema import distribute_hint, distribute_steps
from .store import Store

if TYPE_CHECKING:
    from .crypto import Keyring

#: Seconds to wait for the server before giving up.
CONNECT_TIMEOUT = 10


@contextlib.contextmanager
def connect_store(
    dsn: str,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    *,
    owners: bool = False,
    encryption: Keyring | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> Iterator[Store]:
    """A `Store` on a one-connection autocommit pool, cleanup off, closed afterwards.

    A direct connection is made first: a pool would only report "couldn't get a
    connection" after its timeout, where libpq says at once what went wrong.

    Args:
        dsn: The server (a libpq conninfo string or URL).
        table: The sessions table.
        schema: The table's schema, or None for the search_path.
        owners: A store with sessions per owner.
        encryption: The store's `Keyring`, if it encrypts.
        connect_timeout: Seconds to wait for the server.

    Yields:
        The store.

    Raises:
        RuntimeError: ``cannot connect: ...`` with libpq's first line, if the
            server can't be reached.
    """
    try:
        psycopg.connect(dsn, connect_timeout=max(1, round(connect_timeout))).close()
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot connect: {first_line(exc)}") from exc
    with (
        ConnectionPool(
            dsn, min_size=1, max_size=1, timeout=connect_timeout, kwargs={"autocommit": True}
        ) as pool,
        Store(
            pool,
            table=table,
            schema=schema,
            cleanup=NoCleanup(),
            owners=owners,
            encryption=encryption,
        ) as store,
    ):
        yield store


def create_table(
    dsn: str,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    *,
    owners: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> tuple[str, bool]:
    """Create the sessions table (and its index and schema) on `dsn` if missing.

    Args:
        dsn: The server (a libpq conninfo string or URL).
        table: The sessions table.
        schema: The table's schema, or None for the search_path.
        owners: Also the owner column and its index (added to an existing table).
        connect_timeout: Seconds to wait for the server.

    Returns:
        The table's quoted, qualified name, and whether anything was created.

    Raises:
        RuntimeError: If the server can't be reached.
        sessionstore.DatabaseError: If creating the table failed.
    """
    with connect_store(dsn, table, schema, owners=owners, connect_timeout=connect_timeout) as store:
        return store.name, store.create_table()


def distribute_table(
    dsn: str,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> bool:
    """Distribute the sessions table by token with Citus (`schema.distribute_steps`).

    Args:
        dsn: The Citus coordinator (a libpq conninfo string or URL).
        table: The sessions table (which must exist).
        schema: The table's schema, or None for the search_path.
        connect_timeout: Seconds to wait for the server.

    Returns:
        True if the table was distributed now; False if it already was.

    Raises:
        RuntimeError: If the server can't be reached or the table is missing.
        sessionstore.DatabaseError: If Citus refused (or is not installed).
    """
    with connect_store(dsn, table, schema, connect_timeout=connect_timeout) as store:
        try:
            with store.pool.connection() as conn, conn.transaction():
                return bool(run_steps(conn, distribute_steps(SessionCore(table, schema))))
        except psycopg.Error as exc:
            raise DatabaseError("distribute", exc, distribute_hint(exc)) from exc


def run_steps(conn: psycopg.Connection[Any], steps: Steps) -> Any:
    """Drive a core generator on one connection (as the stores' ``_drive`` does)."""
    result: Result | None = None
    while True:
        try:
            statement = next(steps) if result is None else steps.send(result)
        except StopIteration as done:
            return done.value
        cursor = conn.execute(statement.query, statement.params)
        result = Result(cursor.fetchall() if cursor.description else [], cursor.rowcount)
