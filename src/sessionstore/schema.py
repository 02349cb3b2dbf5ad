"""The sessions table's DDL and the sans-IO steps that create it; see docs/schema.md."""

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
    """Name an index as SCS does (``sessions_expiry_idx``), hashed to fit if too long.

    PostgreSQL would silently truncate a name over its identifier limit; the hash
    suffix keeps it unique instead.
    """
    name = f"{table}_{column}_idx"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return name
    suffix = "_" + hashlib.sha256(table.encode("utf-8")).hexdigest()[:8] + f"_{column}_idx"
    head = table.encode("utf-8")[: MAX_IDENTIFIER_BYTES - len(suffix)]
    return head.decode("utf-8", errors="ignore") + suffix


def _qualified(core: SessionCore) -> str:
    return _name(core.table) if core.schema is None else f"{_name(core.schema)}.{_name(core.table)}"


def _index(core: SessionCore, column: str, guard: str, how: str = "") -> str:
    """The expiry or owner index; the owner one is partial (anonymous sessions need no entry)."""
    where = " WHERE owner IS NOT NULL" if column == "owner" else ""
    return (
        f"CREATE INDEX{how}{guard} {_name(index_name(core.table, column))} "
        f"ON {_qualified(core)} ({column}){where};"
    )


def _statements(core: SessionCore, *, if_not_exists: bool, create_schema: bool = True) -> list[str]:
    guard = " IF NOT EXISTS" if if_not_exists else ""
    statements = []
    if core.schema is not None and if_not_exists and create_schema:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {_name(core.schema)};")
    owner = ",\n\towner TEXT" if core.owners else ""
    statements += [
        f"CREATE TABLE{guard} {_qualified(core)} (\n"
        "\ttoken TEXT PRIMARY KEY,\n"
        "\tdata BYTEA NOT NULL,\n"
        f"\texpiry TIMESTAMPTZ NOT NULL{owner}\n"
        ");",
        _index(core, "expiry", guard),
    ]
    if core.owners:
        statements.append(_index(core, "owner", guard))
    return statements


def ddl(
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    *,
    if_not_exists: bool = False,
    owners: bool = False,
) -> str:
    """Return the DDL for a sessions table and its indexes, one statement per line.

    Names may be any text, quoted where needed; `if_not_exists` also creates the schema,
    and `owners` adds the nullable ``owner`` column and its index.

    Raises:
        TypeError: If a name is not a str.
        ValueError: If a name is empty or not a valid PostgreSQL identifier.
    """
    core = SessionCore(table, schema, owners=owners)
    return "\n".join(_statements(core, if_not_exists=if_not_exists)) + "\n"


def create_table_steps(core: SessionCore) -> Steps:
    """Create what is missing of the schema, table and indexes, safely under concurrency.

    Run inside one transaction; it needs DDL rights only when something is missing.
    With ``owners``, an existing table gets the owner column; its index, if the table
    existed, is left to `owner_index_steps` (outside a transaction).

    Returns:
        tuple[bool, bool]: Whether anything was created, and whether the owner index
        is still to be built concurrently.
    """
    index, owner_index = (
        sql.Identifier(*filter(None, (core.schema, index_name(core.table, c)))).as_string(None)
        for c in ("expiry", "owner")
    )
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
    if not table_exists:
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
        # schema exists, so it only runs when the schema is missing.
        for statement in _statements(core, if_not_exists=True, create_schema=not schema_exists):
            yield _ddl(statement)
        return True, False
    if not index_exists:
        yield _ddl(_index(core, "expiry", " IF NOT EXISTS"))
    if core.owners and not has_owner:
        yield Statement(b"SET LOCAL lock_timeout = '5s'")
        yield _ddl(f"ALTER TABLE {_qualified(core)} ADD COLUMN IF NOT EXISTS owner TEXT;")
    return True, core.owners and not has_owner_index


def owner_index_steps(core: SessionCore) -> Steps:
    """Build the owner index of an existing table without blocking its writes.

    Run outside a transaction (``CREATE INDEX CONCURRENTLY`` can't run in one).
    """
    yield _ddl(_index(core, "owner", " IF NOT EXISTS", " CONCURRENTLY"))
    return True


def distribute_steps(core: SessionCore) -> Steps:
    """Distribute the table by token with Citus, unless it is already (docs/scaling.md#citus).

    Run it as the table's owner, after `create_table_steps`, in its own transaction.

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
    """The advice to add to a failed `distribute_steps`, or ``""``."""
    if not isinstance(exc, psycopg.errors.UndefinedFunction):
        return create_table_hint(exc)
    return "--distributed needs Citus on this server: CREATE EXTENSION citus (see docs/scaling.md)"


def _ddl(statement: str) -> Statement:
    return Statement(escape_percent(statement).encode("utf-8"))


def create_table_hint(exc: psycopg.Error) -> str:
    """The advice to add to a failed `create_table`: only for a lack of privilege, else ``""``."""
    if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return ""
    return (
        "creating the table needs DDL rights; run `python -m sessionstore migrate` as the "
        "table's owner, and give the application only SELECT, INSERT, UPDATE, DELETE"
    )
