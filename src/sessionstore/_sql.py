"""Every statement the stores run on a sessions table, rendered once per store.

`Statements.render` fills the table's quoted, schema-qualified name into each template
and encodes the result, so an operation composes no SQL: psycopg gets bytes. The DDL
that creates the table is in `schema.py`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

#: The rotation statements' shape (see "rotate" below): <old> is what the old row
#: gives besides its expiry, <version> an extra condition on it, <data> the new row's data.
_ROTATE = (
    "WITH old AS (SELECT <old>expiry{owner_column} FROM {t} "
    "WHERE token = %s AND expiry > clock_timestamp() + %s<version> FOR UPDATE), "
    "new AS (INSERT INTO {t} AS s (token, data, expiry{owner_column}) "
    "SELECT %s, <data>, expiry{owner_column} FROM old "
    "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, "
    "expiry = EXCLUDED.expiry{owner_replace} "
    "WHERE s.expiry <= current_timestamp RETURNING token), "
    "cut AS (UPDATE {t} SET expiry = LEAST(expiry, current_timestamp + %s) "
    "WHERE token = %s AND EXISTS (SELECT FROM new)) "
    "SELECT EXISTS (SELECT FROM old), EXISTS (SELECT FROM new)"
)

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
    # Rotation (docs/users.md#a-cap-per-user-and-token-rotation): of two rotations of a
    # row, the second waits on the row lock, then re-checks its WHERE on the row the first
    # left (READ COMMITTED), finds at most the grace left and does nothing. A new key a
    # live row holds is left alone: the first column says whether the old row was there.
    "rotate": _ROTATE.replace("<old>", "data, ").replace("<version>", "").replace("<data>", "data"),
    # With encryption the data is bound to its row's key, so it can't be copied as it
    # is: the store reads it (with the row's version), encrypts it for the new key,
    # and this writes it only while the old row is still at that version.
    "rotate_read": (
        "SELECT data, xmin::text::bigint FROM {t} "
        "WHERE token = %s AND expiry > clock_timestamp() + %s"
    ),
    "rotate_encrypted": (
        _ROTATE.replace("<old>", "")
        .replace("<version>", " AND xmin::text::bigint = %s")
        .replace("<data>", "%s::bytea")
    ),
    # An expired session is never brought back: only a live row is touched.
    "touch": "UPDATE {t} SET expiry = %s WHERE token = %s AND current_timestamp < expiry",
    "set_owner": "UPDATE {t} SET owner = %s WHERE token = %s AND current_timestamp < expiry",
    # The advisory lock that lets one write of an owner's at a time trim its sessions;
    # a transaction's, so it also works through PgBouncer's transaction pooling.
    "owner_lock": "SELECT pg_advisory_xact_lock(%s)",
    "sessions_of": (
        "SELECT token, data, expiry FROM {t} WHERE owner = %s "
        "AND current_timestamp < expiry ORDER BY expiry, token"
    ),
    # Expired rows of the owner go too: they are dead anyway.
    "delete_owned": "DELETE FROM {t} WHERE owner = %s AND token IS DISTINCT FROM %s",
    "revoke": "DELETE FROM {t} WHERE owner = %s AND token = %s",
    # Versions for optimistic concurrency are xmin, which every write of a row changes
    # (docs/sessions.md#how-the-version-is-kept), read as bigint: xid has no binary cast.
    "find_versioned": (
        "SELECT data, xmin::text::bigint, expiry FROM {t} "
        "WHERE token = %s AND current_timestamp < expiry"
    ),
    # A row being written is waited for, then the WHERE re-checked on the new version
    # (READ COMMITTED), whose xmin differs: of two saves from one version, one writes.
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
    # One purge batch (docs/cleanup.md#how-a-purge-runs): the table's purge try-lock, then
    # the next expired rows along the expiry index, skipping locked ones, deleted by token.
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
    # On a table Citus distributes, a "NAME:citus" template replaces NAME's (and
    # "NAME:owners:citus" NAME:owners'); why each differs is in docs/scaling.md#citus.
    # `create` deletes an expired row first, in a CTE, so the key is passed twice.
    "create:citus": (
        "WITH gone AS (DELETE FROM {t} WHERE token = %s AND expiry <= current_timestamp) "
        "INSERT INTO {t} (token, data, expiry) VALUES (%s, %s, %s) ON CONFLICT (token) DO NOTHING"
    ),
    "create:owners:citus": (
        "WITH gone AS (DELETE FROM {t} WHERE token = %s AND expiry <= current_timestamp) "
        "INSERT INTO {t} (token, data, expiry, owner) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (token) DO NOTHING"
    ),
    # `rotate` is three statements (`SessionCore._distributed_rotations`): this reads
    # and locks the old row, with the expiry to cut it to; then `create` and `touch`.
    "rotate_lock:citus": (
        "SELECT data, expiry, LEAST(expiry, current_timestamp + %s){owner_column} FROM {t} "
        "WHERE token = %s AND expiry > clock_timestamp() + %s FOR UPDATE"
    ),
    # A capped write is steps (`SessionCore.capped_steps`): this lock on the worker of
    # the key that is the owner's name, then `owner_lock`, the write, the read of the
    # owner's other live sessions beyond the %s kept and their delete ("The cap's two
    # locks" in docs/scaling.md).
    "owner_anchor:citus": (
        "SELECT pg_advisory_xact_lock(%s) FROM (SELECT count(*) FROM {t} WHERE token = %s) "
        "AS anchor"
    ),
    "victims:citus": (
        "SELECT token FROM {t} WHERE owner = %s AND token <> %s AND current_timestamp < expiry "
        "ORDER BY expiry DESC, token DESC OFFSET %s"
    ),
    "trim:citus": "DELETE FROM {t} WHERE token = ANY(%s::text[])",
    # The purge lock of a distributed table, on the worker of the key '', where every
    # node's purge meets (docs/scaling.md#a-fleet-on-several-coordinators-the-cleanup).
    "purge_lock:citus": (
        "SELECT pg_try_advisory_xact_lock(%s) FROM (SELECT count(*) FROM {t} WHERE token = '') "
        "AS anchor"
    ),
    # `clear` and `delete_prefix` wait for it instead: they must run, after the purge.
    "delete_lock:citus": (
        "SELECT pg_advisory_xact_lock(%s) FROM (SELECT count(*) FROM {t} WHERE token = '') "
        "AS anchor"
    ),
    # Then one DELETE on every shard: a LIMIT across shards would be merged on the coordinator.
    "purge:citus": "DELETE FROM {t} WHERE expiry < current_timestamp",
    "clear:citus": "DELETE FROM {t}",
    "delete_prefix:citus": "DELETE FROM {t} WHERE starts_with(token, %s)",
}

#: Whether the table is one Citus distributes: first whether the table exists and
#: Citus is installed (its catalog exists only then), then whether Citus knows it.
DETECT_CITUS = (
    b"SELECT to_regclass(%s) IS NOT NULL, EXISTS (SELECT 1 FROM pg_extension "
    b"WHERE extname = 'citus')"
)
DETECT_DISTRIBUTED = (
    b"SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass(%s))"
)

# The cap (docs/users.md#a-cap-per-user-and-token-rotation): a write that gives a session
# an owner, as the CTE "written", then the trim of the owner's other live sessions beyond
# the %s kept (the cap less one). The trim sees what was committed when the statement
# began, so the transaction first takes the owner's lock (`owner_lock`, as
# `SessionCore._capped` pairs them). Victims are locked in key order, as combined commits
# lock rows, so the two can't deadlock; a victim deleted meanwhile is skipped.
_TRIM = (
    "victims AS (SELECT o.token FROM {t} AS o JOIN written AS w "
    "ON o.owner = w.owner AND o.token <> w.token WHERE current_timestamp < o.expiry "
    "ORDER BY o.expiry DESC, o.token DESC OFFSET %s), "
    "locked AS (SELECT token FROM {t} WHERE token IN (SELECT token FROM victims) "
    "ORDER BY token FOR UPDATE), "
    "trimmed AS (DELETE FROM {t} WHERE token IN (SELECT token FROM locked)) "
    "SELECT FROM written"
)


def _capped(write: str) -> str:
    """`write` (an owner's write, without RETURNING) followed by the trim of its owner."""
    return f"WITH written AS ({write} RETURNING token, owner), {_TRIM}"


# Only a store with owners has a cap, so these need no "NAME:owners" variant.
_TEMPLATES |= {
    "commit_capped": _capped(_TEMPLATES["commit:owners"]),
    "create_capped": _capped(_TEMPLATES["create:owners"]),
    "set_owner_capped": _capped(_TEMPLATES["set_owner"]),
}

_OWNER_PARTS = {
    "owner_set": ", owner = COALESCE(%s, owner)",
    "owner_many": ", owner = COALESCE(v.owner, s.owner)",
    "owner_array": ", %s::text[]",
    "owner_column": ", owner",
    "owner_replace": ", owner = EXCLUDED.owner",
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
    owner_lock: bytes
    commit_capped: bytes
    create_capped: bytes
    set_owner_capped: bytes
    rotate: bytes
    rotate_read: bytes
    rotate_encrypted: bytes
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
    # Only on a distributed table (each is None otherwise).
    rotate_lock: bytes | None = None
    owner_anchor: bytes | None = None
    victims: bytes | None = None
    trim: bytes | None = None
    purge_lock: bytes | None = None
    delete_lock: bytes | None = None
    purge: bytes | None = None
    clear: bytes | None = None
    delete_prefix: bytes | None = None

    @classmethod
    def render(cls, qualified_name: str, owners: bool, distributed: bool = False) -> Statements:
        """Render every statement for the quoted table name, with owners or not, Citus or not."""
        # Statements always run with a parameter sequence, so psycopg reads "%" as a
        # placeholder: a "%" in a name must reach it doubled.
        table = escape_percent(qualified_name)
        parts = _OWNER_PARTS if owners else dict.fromkeys(_OWNER_PARTS, "")
        rendered: dict[str, Any] = {}
        for field in fields(cls):
            names = [f"{field.name}:owners", field.name][0 if owners else 1 :]
            if distributed:
                names = [f"{name}:citus" for name in names] + names
            name = next((name for name in names if name in _TEMPLATES), None)
            rendered[field.name] = (
                None if name is None else _TEMPLATES[name].format(t=table, **parts).encode()
            )
        return cls(**rendered)


def escape_percent(text: str) -> str:
    """Double every ``%`` in placeholder-free SQL text, so psycopg reads it as a literal."""
    return text.replace("%", "%%")


def advisory_key(purpose: str, qualified_name: str, owner: str | None = None) -> int:
    """A signed 64-bit advisory lock key for `purpose` on a table (with `owner`, that owner's)."""
    text = f"sessionstore:{purpose}:{qualified_name}"
    if owner is not None:
        # Neither a name nor an owner holds NUL, so no two pairs make the same text.
        text += f"\x00{owner}"
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
