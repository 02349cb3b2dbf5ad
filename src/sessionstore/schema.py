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

import hashlib
import re

import psycopg
from psycopg import sql

from ._core import DEFAULT_TABLE, Result, SessionCore, Statement, Steps
from ._sql import advisory_key, escape_percent
from ._validate import MAX_IDENTIFIER_BYTES

__all__ = ["create_table_steps", "ddl", "distribute_steps", "owner_index_steps"]

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


def index_name(table: str, column: str = "expiry") -> str:
    """Name an index as SCS does (``sessions_expiry_idx``), with a hash suffix if too long.

    A name over PostgreSQL's identifier limit would be silently truncated; the suffix
    keeps it unique instead. `column` is ``expiry``, or ``owner`` with ``owners``.
    """
    name = f"{table}_{column}_idx"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return name
    suffix = "_" + hashlib.sha256(table.encode("utf-8")).hexdigest()[:8] + f"_{column}_idx"
    head = table.encode("utf-8")[: MAX_IDENTIFIER_BYTES - len(suffix)]
    return head.decode("utf-8", errors="ignore") + suffix


def _qualified(schema: str | None, name: str) -> str:
    return _name(name) if schema is None else f"{_name(schema)}.{_name(name)}"


def _statements(core: SessionCore, *, if_not_exists: bool, create_schema: bool = True) -> list[str]:
    guard = " IF NOT EXISTS" if if_not_exists else ""
    qualified = _qualified(core.schema, core.table)
    statements = []
    if core.schema is not None and if_not_exists and create_schema:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {_name(core.schema)};")
    owner = ",\n\towner TEXT" if core.owners else ""
    statements += [
        f"CREATE TABLE{guard} {qualified} (\n"
        "\ttoken TEXT PRIMARY KEY,\n"
        "\tdata BYTEA NOT NULL,\n"
        f"\texpiry TIMESTAMPTZ NOT NULL{owner}\n"
        ");",
        f"CREATE INDEX{guard} {_name(index_name(core.table))} ON {qualified} (expiry);",
    ]
    if core.owners:
        statements.append(_owner_index(core, guard))
    return statements


def _owner_index(core: SessionCore, guard: str, concurrently: bool = False) -> str:
    # Partial: anonymous sessions (no owner) are most rows and need no entry.
    how = " CONCURRENTLY" if concurrently else ""
    return (
        f"CREATE INDEX{how}{guard} {_name(index_name(core.table, 'owner'))} "
        f"ON {_qualified(core.schema, core.table)} (owner) WHERE owner IS NOT NULL;"
    )


def ddl(
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    *,
    if_not_exists: bool = False,
    owners: bool = False,
) -> str:
    """Return the DDL for a sessions table and its expiry index.

    Args:
        table: The table's name; any text, quoted where needed.
        schema: The schema, or None for the search_path.
        if_not_exists: Add ``IF NOT EXISTS`` (and create the schema), for idempotent use.
        owners: Add the nullable ``owner`` column and its index, for sessions per
            user (``Store(pool, owners=True)``); a Go SCS app can share the table.

    Returns:
        The SQL text, one statement per line (the table's spans several).

    Raises:
        TypeError: If a name is not a str.
        ValueError: If a name is empty or not a valid PostgreSQL identifier.
    """
    core = SessionCore(table, schema, owners=owners)
    return "\n".join(_statements(core, if_not_exists=if_not_exists)) + "\n"


def create_table_steps(core: SessionCore) -> Steps:
    """Create the schema, table and indexes that are missing, safely under concurrency.

    Run inside one transaction. On an existing table and index it only takes an
    advisory lock and reads the catalog, so it succeeds without DDL rights.

    With ``owners``, an existing table without the owner column gets it: adding a
    nullable column without a default changes only the catalog (no rewrite), under a
    lock timeout so it never queues behind a long transaction for long. The owner
    index of a table that already has rows is not built here, since that would block
    writes while it is built: the generator returns `owner_index_steps` for the
    caller to run outside a transaction (``CREATE INDEX CONCURRENTLY``).

    Args:
        core: The store's core (names the table).

    Yields:
        Statement: The statements to execute, in order.

    Returns:
        tuple[bool, bool]: Whether anything was created, and whether the owner index
        is still to be built concurrently.
    """
    index = sql.Identifier(*filter(None, (core.schema, index_name(core.table)))).as_string(None)
    owner_index = sql.Identifier(
        *filter(None, (core.schema, index_name(core.table, "owner")))
    ).as_string(None)
    # Lock first: a catalog lookup made before waiting could be answered from a
    # cache that misses what the holder of the lock created meanwhile.
    yield Statement(
        b"SELECT pg_advisory_xact_lock(%s)", (advisory_key("create", core.qualified_name),)
    )
    schema = None if core.schema is None else sql.Identifier(core.schema).as_string(None)
    found: Result = yield Statement(
        b"SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL, "
        b"%s::text IS NULL OR to_regnamespace(%s) IS NOT NULL, "
        b"EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        b"AND attname = 'owner' AND NOT attisdropped), to_regclass(%s) IS NOT NULL",
        (core.qualified_name, index, schema, schema, core.qualified_name, owner_index),
    )
    table_exists, index_exists, schema_exists, has_owner, has_owner_index = found.rows[0]
    owners_ready = not core.owners or (has_owner and has_owner_index)
    if table_exists and index_exists and owners_ready:
        return False, False
    qualified = _qualified(core.schema, core.table)
    if not table_exists:
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
        # schema exists, so it only runs when the schema is missing.
        for statement in _statements(core, if_not_exists=True, create_schema=not schema_exists):
            yield _ddl(statement)
        return True, False
    if not index_exists:
        yield _ddl(
            f"CREATE INDEX IF NOT EXISTS {_name(index_name(core.table))} ON {qualified} (expiry);"
        )
    if core.owners and not has_owner:
        yield Statement(b"SET LOCAL lock_timeout = '5s'")
        yield _ddl(f"ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS owner TEXT;")
    return True, core.owners and not has_owner_index


def owner_index_steps(core: SessionCore) -> Steps:
    """Build the owner index of an existing table without blocking its writes.

    Run outside a transaction (``CREATE INDEX CONCURRENTLY`` can't run in one).

    Args:
        core: The store's core.

    Yields:
        Statement: The statement to execute.

    Returns:
        bool: True.
    """
    yield _ddl(_owner_index(core, " IF NOT EXISTS", concurrently=True))
    return True


def distribute_steps(core: SessionCore) -> Steps:
    """Distribute the table by token with Citus, unless it is already.

    ``create_distributed_table`` splits it into shards on the workers (copying any
    rows, and blocking writes while it does); the coordinator's table keeps no
    rows after (``truncate_local_data_after_distributing_table``). Run it as the
    table's owner, after `create_table_steps`, in its own transaction.

    Args:
        core: The store's core (names the table).

    Yields:
        Statement: The statements to execute, in order.

    Returns:
        bool: True if the table was distributed now; False if it already was.

    Raises:
        RuntimeError: If the table does not exist.
    """
    distributed = yield from core.detect_steps()
    if distributed is None:
        raise RuntimeError(f"no table {core.qualified_name} to distribute")
    if distributed:
        return False
    yield Statement(b"SELECT create_distributed_table(%s, 'token')", (core.qualified_name,))
    yield Statement(
        b"SELECT truncate_local_data_after_distributing_table(%s)", (core.qualified_name,)
    )
    return True


def distribute_hint(exc: psycopg.Error) -> str:
    """The advice to add to a failed `distribute_steps`: install Citus, if that is why.

    Args:
        exc: What distributing the table raised.

    Returns:
        The hint, or ``""``.
    """
    if isinstance(exc, psycopg.errors.UndefinedFunction):
        return (
            "--distributed needs Citus on this server: CREATE EXTENSION citus (see docs/scaling.md)"
        )
    return create_table_hint(exc)


def _ddl(statement: str) -> Statement:
    return Statement(escape_percent(statement).encode("utf-8"))


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
