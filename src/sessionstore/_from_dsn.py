"""One-off jobs on a DSN (the CLI, the demo, the benchmarks, the pytest plugin).

A store on a single connection, and creating or distributing the table through the
store's own path, so the locking and catalog checks are the ones users get.
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

#: Seconds to wait for the server.
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

    Raises RuntimeError (``cannot connect: ...`` and libpq's reason) if the server can't
    be reached.
    """
    # A direct connection first: a pool would only report "couldn't get a connection"
    # after its timeout, where libpq says at once what went wrong.
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
    """Create what is missing of the table on `dsn` (`Store.create_table`).

    Returns the table's quoted, qualified name and whether anything was created; raises
    RuntimeError if the server can't be reached, DatabaseError if creating failed.
    """
    with connect_store(dsn, table, schema, owners=owners, connect_timeout=connect_timeout) as store:
        return store.name, store.create_table()


def distribute_table(dsn: str, table: str = DEFAULT_TABLE, schema: str | None = None) -> bool:
    """Distribute the existing table by token on the Citus coordinator `dsn`.

    Returns False if it already was; raises RuntimeError if the server can't be reached
    or the table is missing, DatabaseError if Citus refused (or is not installed).
    """
    with connect_store(dsn, table, schema) as store:
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
