"""The sessions table's DDL, and the steps that create it idempotently.

By default the DDL is byte for byte the one from SCS's pgxstore README, so a table
created for a Go SCS application works unchanged, and the reverse:

    CREATE TABLE sessions (
        token TEXT PRIMARY KEY,
        data BYTEA NOT NULL,
        expiry TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX sessions_expiry_idx ON sessions (expiry);

`create_table_steps` is sans-IO like the rest of the core: the stores drive it.
It only needs DDL rights when something is missing, and serialises concurrent
creators with a transaction-scoped advisory lock, because two plain
``CREATE TABLE IF NOT EXISTS`` racing each other can raise UniqueViolation.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

from ._core import (
    DEFAULT_TABLE,
    Result,
    SessionCore,
    Statement,
    Steps,
    advisory_key,
    escape_percent,
    index_name,
)

__all__ = ["create_table_steps", "ddl"]

# PostgreSQL's keywords that can't be a table or schema name unquoted (reserved, and
# reserved-but-for-types-and-functions). Any other plain lowercase name is printed bare.
_RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization binary both case
    cast check collate collation column concurrently constraint create cross
    current_catalog current_date current_role current_schema current_time
    current_timestamp current_user default deferrable desc distinct do else end except
    false fetch for foreign freeze from full grant group having ilike in initially inner
    intersect into is isnull join lateral leading left like limit localtime
    localtimestamp natural not notnull null offset on only or order outer overlaps
    placing primary references returning right select session_user similar some
    symmetric system_user table tablesample then to trailing true union unique user
    using variadic verbose when where window with
    """.split()
)
_PLAIN = re.compile(r"[a-z_][a-z0-9_]*\Z")


def _name(name: str) -> str:
    """Render an identifier bare when that means the same, else quoted."""
    if _PLAIN.match(name) and name not in _RESERVED:
        return name
    return sql.Identifier(name).as_string(None)


def _qualified(schema: str | None, name: str) -> str:
    return _name(name) if schema is None else f"{_name(schema)}.{_name(name)}"


def _statements(core: SessionCore, *, if_not_exists: bool, create_schema: bool = True) -> list[str]:
    guard = " IF NOT EXISTS" if if_not_exists else ""
    qualified = _qualified(core.schema, core.table)
    statements = []
    if core.schema is not None and if_not_exists and create_schema:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {_name(core.schema)};")
    statements += [
        f"CREATE TABLE{guard} {qualified} (\n"
        "\ttoken TEXT PRIMARY KEY,\n"
        "\tdata BYTEA NOT NULL,\n"
        "\texpiry TIMESTAMPTZ NOT NULL\n"
        ");",
        f"CREATE INDEX{guard} {_name(index_name(core.table))} ON {qualified} (expiry);",
    ]
    return statements


def ddl(
    table: str = DEFAULT_TABLE, schema: str | None = None, *, if_not_exists: bool = False
) -> str:
    """Return the DDL for a sessions table and its expiry index.

    Args:
        table: The table's name; any text, quoted where needed.
        schema: The schema, or None for the search_path.
        if_not_exists: Add ``IF NOT EXISTS`` (and create the schema), for idempotent use.

    Returns:
        The SQL text, one statement per line (the table's spans several).

    Raises:
        TypeError: If a name is not a str.
        ValueError: If a name is empty or not a valid PostgreSQL identifier.
    """
    return "\n".join(_statements(SessionCore(table, schema), if_not_exists=if_not_exists)) + "\n"


def create_table_steps(core: SessionCore) -> Steps:
    """Create the schema, table and index that are missing, safely under concurrency.

    Run inside one transaction. On an existing table and index it only takes an
    advisory lock and reads the catalog, so it succeeds without DDL rights.

    Args:
        core: The store's core (names the table).

    Yields:
        Statement: The statements to execute, in order.

    Returns:
        bool: True if anything was created, False if everything existed already.
    """
    index = sql.Identifier(*filter(None, (core.schema, index_name(core.table)))).as_string(None)
    # Lock first: a catalog lookup made before waiting could be answered from a
    # cache that misses what the holder of the lock created meanwhile.
    yield Statement(
        b"SELECT pg_advisory_xact_lock(%s)", (advisory_key("create", core.qualified_name),)
    )
    schema = None if core.schema is None else sql.Identifier(core.schema).as_string(None)
    found: Result = yield Statement(
        b"SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL, "
        b"%s::text IS NULL OR to_regnamespace(%s) IS NOT NULL",
        (core.qualified_name, index, schema, schema),
    )
    table_and_index_exist, schema_exists = found.rows[0]
    if table_and_index_exist:
        return False
    # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
    # schema exists, so it only runs when the schema is missing.
    for statement in _statements(core, if_not_exists=True, create_schema=not schema_exists):
        yield Statement(escape_percent(statement).encode("utf-8"))
    return True


#: Why create_table fails for an application role, and what to do instead.
_CREATE_HINT = (
    "creating the table needs DDL rights; run `python -m sessionstore migrate` as the "
    "table's owner, and give the application only SELECT, INSERT, UPDATE, DELETE"
)


def create_table_hint(exc: psycopg.Error) -> str:
    """The advice to add to a failed `create_table`, if any.

    Only a refusal for lack of privilege gets it: a pool timeout or a lost
    connection has nothing to do with DDL rights.

    Args:
        exc: What creating the table raised.

    Returns:
        The hint, or ``""``.
    """
    return _CREATE_HINT if isinstance(exc, psycopg.errors.InsufficientPrivilege) else ""
