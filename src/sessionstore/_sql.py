"""Every statement the stores run on a sessions table, rendered once per store.

`Statements.render` fills the table's quoted, schema-qualified name into each template
and encodes the result, so an operation composes no SQL: psycopg gets bytes. The DDL
that creates the table is in `schema.py`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

# Placeholders: {t} is the table; {owner_*} are filled only on a table with owners,
# where a "NAME:owners" template, if any, replaces NAME's.
_TEMPLATES = {
    "find": "SELECT data FROM {t} WHERE token = %s AND current_timestamp < expiry",
    "expiry": "SELECT expiry FROM {t} WHERE token = %s AND current_timestamp < expiry",
    "all": "SELECT token, data FROM {t} WHERE current_timestamp < expiry",
    "commit": (
        "INSERT INTO {t} (token, data, expiry) VALUES (%s, %s, %s) "
        "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry"
    ),
    # With owners, a commit without one keeps the row's owner (COALESCE), so a
    # request that merely saves a session never logs its user out of the list.
    "commit:owners": (
        "INSERT INTO {t} AS s (token, data, expiry, owner) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry, "
        "owner = COALESCE(EXCLUDED.owner, s.owner)"
    ),
    # Insert, or replace an expired row; a live row is left as it is (the WHERE
    # of DO UPDATE is false, so no row is written and the count is 0).
    "create": (
        "INSERT INTO {t} AS s (token, data, expiry) VALUES (%s, %s, %s) "
        "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry "
        "WHERE s.expiry <= current_timestamp"
    ),
    "create:owners": (
        "INSERT INTO {t} AS s (token, data, expiry, owner) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry, "
        "owner = COALESCE(EXCLUDED.owner, s.owner) WHERE s.expiry <= current_timestamp"
    ),
    # Only a live session is rewritten; the key comes last, as the WHERE names it.
    "update": (
        "UPDATE {t} SET data = %s, expiry = %s WHERE token = %s AND current_timestamp < expiry"
    ),
    "update:owners": (
        "UPDATE {t} SET data = %s, expiry = %s, owner = COALESCE(%s, owner) "
        "WHERE token = %s AND current_timestamp < expiry"
    ),
    "delete": "DELETE FROM {t} WHERE token = %s",
    # An expired session is never brought back: only a live row is touched.
    "touch": "UPDATE {t} SET expiry = %s WHERE token = %s AND current_timestamp < expiry",
    "set_owner": "UPDATE {t} SET owner = %s WHERE token = %s AND current_timestamp < expiry",
    "sessions_of": (
        "SELECT token, data, expiry FROM {t} WHERE owner = %s "
        "AND current_timestamp < expiry ORDER BY expiry, token"
    ),
    # Expired rows of the owner go too: they are dead anyway.
    "delete_owned": "DELETE FROM {t} WHERE owner = %s AND token IS DISTINCT FROM %s",
    "revoke": "DELETE FROM {t} WHERE owner = %s AND token = %s",
    # Versions for optimistic concurrency: xmin, the id of the transaction that wrote
    # the row version, changes with every write of the row and needs no column of its
    # own, so the SCS table stays as Go apps share it. It is read as bigint (xid has no
    # ordering and no binary cast to int).
    "find_versioned": (
        "SELECT data, xmin::text::bigint, expiry FROM {t} "
        "WHERE token = %s AND current_timestamp < expiry"
    ),
    # A row another transaction is writing is waited for, then its WHERE is evaluated
    # again on the new version (READ COMMITTED), whose xmin differs: of two saves from
    # one version, exactly one writes.
    "update_versioned": (
        "UPDATE {t} SET data = %s, expiry = %s{owner_set} "
        "WHERE token = %s AND xmin::text::bigint = %s AND current_timestamp < expiry"
    ),
    # Combined statements serve many concurrent callers in one round trip; rows are
    # passed as arrays, in token order (see `SessionCore.commit_many`).
    "find_many": (
        "SELECT token, data FROM {t} WHERE token = ANY(%s::text[]) AND current_timestamp < expiry"
    ),
    "commit_many": (
        "INSERT INTO {t} (token, data, expiry) "
        "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::timestamptz[]) "
        "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry"
    ),
    "commit_many:owners": (
        "INSERT INTO {t} AS s (token, data, expiry, owner) "
        "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::timestamptz[], %s::text[]) "
        "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry, "
        "owner = COALESCE(EXCLUDED.owner, s.owner)"
    ),
    "touch_many": (
        "UPDATE {t} AS s SET expiry = v.expiry "
        "FROM unnest(%s::text[], %s::timestamptz[]) AS v(token, expiry) "
        "WHERE s.token = v.token AND current_timestamp < s.expiry RETURNING s.token"
    ),
    "find_versioned_many": (
        "SELECT token, data, xmin::text::bigint, expiry FROM {t} "
        "WHERE token = ANY(%s::text[]) AND current_timestamp < expiry"
    ),
    "update_versioned_many": (
        "UPDATE {t} AS s SET data = v.data, expiry = v.expiry{owner_many} "
        "FROM unnest(%s::text[], %s::bytea[], %s::timestamptz[], %s::bigint[]{owner_array}) "
        "AS v(token, data, expiry, version{owner_column}) "
        "WHERE s.token = v.token AND s.xmin::text::bigint = v.version "
        "AND current_timestamp < s.expiry RETURNING s.token"
    ),
    # One purge batch is one statement, hence one transaction, so it works the same
    # through PgBouncer's transaction pooling, where a session-level lock could be
    # taken on one server connection and released on another (and leak):
    # - it takes the table's purge lock with a transaction-level try-lock, and deletes
    #   nothing when another purge statement holds it;
    # - it walks the expiry index from where the last batch ended, so no batch
    #   re-reads live rows or what earlier batches deleted;
    # - it locks the rows it picks with SKIP LOCKED: a row a commit, touch or delete
    #   holds is left for a later round, so the purge never waits on a row lock and
    #   can't take part in a deadlock, whatever order others lock rows in. The lock
    #   re-checks the expiry on the newest row version, so a session a commit has just
    #   extended is never picked, and nobody can change a picked row before the delete.
    # Rows are deleted by token, the primary key: ctid would repeat across the
    # partitions of a partitioned table.
    "purge_batch": (
        "WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(%s) AS held), "
        "deleted AS (DELETE FROM {t} WHERE token = ANY(ARRAY("
        "SELECT token FROM {t} WHERE (SELECT held FROM lock) "
        "AND expiry >= %s AND expiry < current_timestamp "
        "ORDER BY expiry LIMIT %s FOR UPDATE SKIP LOCKED"
        ")) RETURNING expiry"
        ") SELECT (SELECT held FROM lock), count(*), max(expiry) FROM deleted"
    ),
    # A batch of `clear` walks the primary key from where the last one ended and,
    # like the purge, skips rows other transactions hold instead of waiting.
    "clear_batch": (
        "WITH deleted AS (DELETE FROM {t} WHERE token = ANY(ARRAY("
        "SELECT token FROM {t} WHERE token > %s "
        "ORDER BY token LIMIT %s FOR UPDATE SKIP LOCKED"
        ")) RETURNING token) SELECT count(*), max(token) FROM deleted"
    ),
    # A batch of `reencrypt` reads the live rows whose data does not begin with the
    # keyring's prefix (format byte and first key's id), walking the primary key from
    # where the last batch ended, with the version and expiry `update_versioned_many`
    # then checks and keeps: a row written after this read is left alone.
    "reencrypt_batch": (
        "SELECT token, data, xmin::text::bigint, expiry FROM {t} "
        "WHERE token > %s AND current_timestamp < expiry "
        "AND substring(data FROM 1 FOR %s) <> %s ORDER BY token LIMIT %s"
    ),
    # As `clear_batch`, only keys that start with a prefix. starts_with() compares
    # code points, whatever the column's collation; the walk orders by the collation,
    # as `clear` does, and only continues from the last key a batch deleted.
    "delete_prefix_batch": (
        "WITH deleted AS (DELETE FROM {t} WHERE token = ANY(ARRAY("
        "SELECT token FROM {t} WHERE token > %s AND starts_with(token, %s) "
        "ORDER BY token LIMIT %s FOR UPDATE SKIP LOCKED"
        ")) RETURNING token) SELECT count(*), max(token) FROM deleted"
    ),
}

_OWNER_PARTS = {
    "owner_set": ", owner = COALESCE(%s, owner)",
    "owner_many": ", owner = COALESCE(v.owner, s.owner)",
    "owner_array": ", %s::text[]",
    "owner_column": ", owner",
}


@dataclass(frozen=True, slots=True)
class Statements:
    """The statements on one table, as bytes ready for psycopg (see `_TEMPLATES`)."""

    find: bytes
    expiry: bytes
    all: bytes
    commit: bytes
    create: bytes
    update: bytes
    delete: bytes
    touch: bytes
    set_owner: bytes
    sessions_of: bytes
    delete_owned: bytes
    revoke: bytes
    find_versioned: bytes
    update_versioned: bytes
    find_many: bytes
    commit_many: bytes
    touch_many: bytes
    find_versioned_many: bytes
    update_versioned_many: bytes
    purge_batch: bytes
    clear_batch: bytes
    delete_prefix_batch: bytes
    reencrypt_batch: bytes

    @classmethod
    def render(cls, qualified_name: str, owners: bool) -> Statements:
        """Render every statement for the quoted table name, with or without owners."""
        # Statements always run with a parameter sequence, so psycopg reads "%" as a
        # placeholder: a "%" in a name must reach it doubled.
        table = escape_percent(qualified_name)
        parts = _OWNER_PARTS if owners else dict.fromkeys(_OWNER_PARTS, "")
        rendered = {}
        for field in fields(cls):
            name = f"{field.name}:owners"
            text = _TEMPLATES[name if owners and name in _TEMPLATES else field.name]
            rendered[field.name] = text.format(t=table, **parts).encode()
        return cls(**rendered)


def escape_percent(text: str) -> str:
    """Double every ``%`` in placeholder-free SQL text, so psycopg reads it as a literal."""
    return text.replace("%", "%%")


def advisory_key(purpose: str, qualified_name: str) -> int:
    """A signed 64-bit advisory lock key for `purpose` (``"create"``, ``"purge"``) on a table."""
    digest = hashlib.sha256(f"sessionstore:{purpose}:{qualified_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
