"""What both stores ask of their pool: its type, autocommit, retries; see docs/usage.md#the-pool."""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

#: The fewest times a statement runs again after its connection broke (the most is
#: the pool's size).
MIN_RETRIES = 2

#: Logged once per store whose pool hands out connections outside autocommit mode.
NOT_AUTOCOMMIT = (
    "pool %r: connections are not in autocommit mode, so every store call costs three "
    "round trips (BEGIN, the statement, COMMIT) instead of one; create the pool with "
    'kwargs={"autocommit": True} (every store operation is a single statement or runs '
    "its own transaction)"
)

#: What a facade's ``_query`` returns: the first row, all rows, the rowcount, or nothing.
Fetch = Literal["one", "all", "count", "none"]


def pool_type_error(pool: object, expected: type) -> TypeError:
    """The error for a pool a store can't use, naming the store that takes it."""
    hint = ""
    if isinstance(pool, ConnectionPool):
        hint = "; use Store"
    elif isinstance(pool, AsyncConnectionPool):
        hint = "; use AsyncStore"
    return TypeError(
        f"pool must be a psycopg_pool.{expected.__name__}, not {type(pool).__name__}{hint}"
    )


def binary_results(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether `conn`'s cursors may return binary results (a ``ClientCursor`` can't).

    Rows then come as text, which psycopg decodes to the same values.
    """
    factory = getattr(conn, "cursor_factory", None)
    client = (psycopg.ClientCursor, psycopg.AsyncClientCursor)
    return not (isinstance(factory, type) and issubclass(factory, client))
