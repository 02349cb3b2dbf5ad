"""The sans-IO core shared by `Store` and `AsyncStore`.

Everything that varies between operations lives here and is pure: SQL text (built
once per store with `psycopg.sql`, so table and schema names are quoted identifiers),
argument validation, and row decoding. Nothing in this module opens a connection or
waits on a socket; the facades borrow a connection, execute what the core built, and
hand the rows back.

Multi-statement operations (creating the table, purging in batches) are written as
generators in the style of psycopg's own ``generators.py``: the generator yields each
`Statement` it needs run and receives its `Result`, so one description of the flow
drives both the sync and the async facade.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .errors import OwnersNotEnabledError

#: The longest token accepted, in characters. SCS tokens are 43 characters; the
#: limit keeps every token (4 bytes per character at worst) well inside PostgreSQL's
#: btree entry limit of about 2.7 KB, which would otherwise fail on commit only.
MAX_TOKEN_LENGTH = 512

#: The default `max_data_size`: the largest payload a store accepts, in bytes.
DEFAULT_MAX_DATA_SIZE = 64 * 1024 * 1024

#: The default number of expired sessions one purge statement deletes.
DEFAULT_PURGE_BATCH_SIZE = 5000

#: The most concurrent calls one combined statement serves (see `find_many`).
MAX_BATCH = 64

#: The most payload bytes one combined commit carries; a larger payload goes alone.
MAX_BATCH_BYTES = 1024 * 1024

#: Where a purge's walk along the expiry index starts.
_BEGINNING_OF_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63

DEFAULT_TABLE = "sessions"

#: Rows returned by a statement, as psycopg gives them.
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement for a facade to execute.

    Attributes:
        query: The SQL text, rendered once (bytes, so psycopg does no composing).
        params: The parameters for the query's placeholders.
    """

    query: bytes
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class Result:
    """What a facade sends back into a generator after executing a `Statement`.

    Attributes:
        rows: The rows the statement returned (empty if it returns none).
        rowcount: The number of rows affected, as the server reported it.
    """

    rows: Rows
    rowcount: int


@dataclass(frozen=True, slots=True)
class OwnedSession:
    """One live session of an owner, as `sessions_of` lists it.

    Attributes:
        key: The stored key: the token, or its hash on a store with ``hash_tokens``
            (what `revoke` takes; it never is the raw token there).
        data: The session's data.
        expiry: When it expires, timezone-aware, in UTC.
    """

    key: str
    data: bytes
    expiry: dt.datetime


@dataclass(frozen=True, slots=True)
class Versioned:
    """A live session with the version of its row, as `find_versioned` returns it.

    Attributes:
        data: The session's data.
        version: The row's version: PostgreSQL's ``xmin``, which every write of
            the row changes; `update_versioned` writes only while it is unchanged.
        expiry: When it expires, timezone-aware, in UTC.
    """

    data: bytes
    version: int
    expiry: dt.datetime


#: A multi-statement operation: yields statements, receives results, returns T.
Steps = Generator[Statement, Result, Any]


def validate_identifier(name: object, what: str) -> str:
    """Check a table or schema name.

    Any text is accepted, since it is always quoted: capitals, spaces, quotes,
    semicolons and dots name exactly that relation. What PostgreSQL can't store
    as written is refused, instead of being silently changed.

    Args:
        name: The name to check.
        what: ``"table"`` or ``"schema"``, for the error message.

    Returns:
        The name, unchanged.

    Raises:
        TypeError: If the name is not a str.
        ValueError: If it is empty, contains NUL or lone surrogates, or is longer
            than PostgreSQL's 63-byte identifier limit (it would be truncated).
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} name must not be empty")
    if "\x00" in name:
        raise ValueError(f"{what} name must not contain a NUL character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} name must be valid Unicode (no lone surrogates)") from None
    if size > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{what} name is {size} bytes long; PostgreSQL identifiers are at most "
            f"{MAX_IDENTIFIER_BYTES} bytes"
        )
    return name


def validate_token(token: object) -> str:
    """Check a session token before it reaches any SQL.

    Error messages never contain the token: it is a credential.

    Args:
        token: The session token.

    Returns:
        The token, unchanged.

    Raises:
        TypeError: If the token is not a str.
        ValueError: If it is empty, longer than `MAX_TOKEN_LENGTH`, or contains
            NUL or lone surrogates.
    """
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if not token:
        raise ValueError("token must not be empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(
            f"token is {len(token)} characters long; the maximum is {MAX_TOKEN_LENGTH}"
        )
    if not token.isascii():
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("token must be valid Unicode (no lone surrogates)") from None
    if "\x00" in token:
        raise ValueError("token must not contain a NUL character")
    return token


#: The longest owner (a user id) accepted, in characters.
MAX_OWNER_LENGTH = 512


def validate_owner(owner: object) -> str:
    """Check a session's owner (the user it belongs to) before it reaches any SQL.

    Args:
        owner: The owner: any non-empty text, typically a user id.

    Returns:
        The owner, unchanged.

    Raises:
        TypeError: If it is not a str (pass ``str(user_id)`` for a number).
        ValueError: If it is empty, longer than `MAX_OWNER_LENGTH`, or contains
            NUL or lone surrogates.
    """
    if not isinstance(owner, str):
        raise TypeError(f"owner must be a str, not {type(owner).__name__}")
    if not owner:
        raise ValueError("owner must not be empty")
    if len(owner) > MAX_OWNER_LENGTH:
        raise ValueError(
            f"owner is {len(owner)} characters long; the maximum is {MAX_OWNER_LENGTH}"
        )
    if "\x00" in owner:
        raise ValueError("owner must not contain a NUL character")
    try:
        owner.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("owner must be valid Unicode (no lone surrogates)") from None
    return owner


def validate_data(data: object, max_size: int) -> bytes | bytearray | memoryview:
    """Check a session payload.

    Args:
        data: The payload: bytes, bytearray or memoryview.
        max_size: The largest payload accepted, in bytes.

    Returns:
        The payload: unchanged, or copied to bytes if it is a memoryview psycopg
        can't send as it is (not contiguous, or not made of single bytes).

    Raises:
        TypeError: If the payload is not bytes-like.
        ValueError: If it is larger than `max_size`.
    """
    if isinstance(data, bytes | bytearray):
        size = len(data)
    elif isinstance(data, memoryview):
        size = data.nbytes
        if not data.c_contiguous or data.ndim != 1 or data.itemsize != 1:
            data = data.tobytes()  # psycopg sends only flat byte buffers
    else:
        raise TypeError(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")
    if size > max_size:
        raise ValueError(f"data is {size} bytes; this store accepts at most {max_size}")
    return data


def validate_expiry(expiry: object) -> dt.datetime:
    """Check a session's expiry time.

    Args:
        expiry: A timezone-aware datetime.

    Returns:
        The expiry, unchanged.

    Raises:
        TypeError: If it is not a datetime.
        ValueError: If it is naive: PostgreSQL would read it in the server's
            TimeZone, which is hours off on most servers.
    """
    if not isinstance(expiry, dt.datetime):
        raise TypeError(f"expiry must be a datetime, not {type(expiry).__name__}")
    if expiry.tzinfo is None or expiry.utcoffset() is None:
        raise ValueError(
            "expiry must be timezone-aware, e.g. datetime.now(timezone.utc) + lifetime"
        )
    return expiry


def validate_max_data_size(max_data_size: object) -> int:
    """Check the `max_data_size` store option.

    Args:
        max_data_size: The largest payload a store should accept, in bytes.

    Returns:
        The value, unchanged.

    Raises:
        TypeError: If it is not an int.
        ValueError: If it is below 0 or above PostgreSQL's 1 GB bytea limit.
    """
    if isinstance(max_data_size, bool) or not isinstance(max_data_size, int):
        raise TypeError(f"max_data_size must be an int, not {type(max_data_size).__name__}")
    if not 0 <= max_data_size < 1024**3:
        raise ValueError("max_data_size must be between 0 and 1 GiB (PostgreSQL's limit)")
    return max_data_size


def validate_batch_size(batch_size: object) -> int:
    """Check a purge batch size.

    Args:
        batch_size: The most sessions one purge statement deletes.

    Returns:
        The value, unchanged.

    Raises:
        TypeError: If it is not an int.
        ValueError: If it is not positive.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, not {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def hash_token(token: str) -> str:
    """The form a token is stored in with ``hash_tokens=True``, as SCS's HashTokenInStore.

    Unpadded base64url of the SHA-256 digest of the token's UTF-8 bytes: 43
    characters, so a table shared with a Go SCS application stays compatible.

    Args:
        token: The session token, as the client sends it.

    Returns:
        The stored key.
    """
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _unchanged(token: str) -> str:
    return token


def escape_percent(text: str) -> str:
    """Double every ``%`` so psycopg's placeholder parser reads it as a literal.

    Args:
        text: SQL text that contains no placeholders, e.g. a quoted identifier.

    Returns:
        The text with ``%`` doubled.
    """
    return text.replace("%", "%%")


def _render(query: sql.Composable) -> bytes:
    return query.as_bytes(None)


def advisory_key(purpose: str, qualified_name: str) -> int:
    """Derive a signed 64-bit PostgreSQL advisory lock key.

    Args:
        purpose: What the lock guards (``"create"``, ``"purge"``), so the locks of
            different jobs on the same table never collide.
        qualified_name: The table's quoted, schema-qualified name.

    Returns:
        A key for ``pg_advisory_lock(bigint)`` and friends.
    """
    digest = hashlib.sha256(f"sessionstore:{purpose}:{qualified_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def index_name(table: str, column: str = "expiry") -> str:
    """Name an index of a table as SCS does (``sessions_expiry_idx``).

    A name that would exceed PostgreSQL's identifier limit is shortened with a
    hash suffix, so it stays unique and is never silently truncated.

    Args:
        table: The table's name.
        column: The indexed column (``expiry``, or ``owner`` with ``owners``).

    Returns:
        The index name.
    """
    name = f"{table}_{column}_idx"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return name
    suffix = "_" + hashlib.sha256(table.encode("utf-8")).hexdigest()[:8] + f"_{column}_idx"
    head = table.encode("utf-8")[: MAX_IDENTIFIER_BYTES - len(suffix)]
    return head.decode("utf-8", errors="ignore") + suffix


def _first_per_key(updates: Sequence[Statement]) -> dict[str, Statement]:
    """The first of `updates` for each stored key (an `update_versioned`'s key is second last)."""
    first: dict[str, Statement] = {}
    for update in updates:
        first.setdefault(update.params[-2], update)
    return first


class SessionCore:
    """Validation, SQL and decoding for one sessions table.

    One instance is built per store; it holds the SQL rendered for that table, so
    an operation costs no query composing.

    Args:
        table: The table's name (quoted, so any name works).
        schema: The table's schema, or None to follow the search_path.
        max_data_size: The largest payload accepted, in bytes.
        purge_batch_size: The most sessions one purge statement deletes.
        hash_tokens: Store `hash_token(token)` instead of the token itself.
        owners: The table has the nullable ``owner`` column: commits and creates
            may set it, and the per-owner operations work.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a name or size is out of range.
    """

    def __init__(
        self,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        max_data_size: int = DEFAULT_MAX_DATA_SIZE,
        purge_batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
        hash_tokens: bool = False,
        owners: bool = False,
    ) -> None:
        self.purge_batch_size = validate_batch_size(purge_batch_size)
        self.owners = bool(owners)
        self.hash_tokens = bool(hash_tokens)
        self._key: Callable[[str], str] = hash_token if hash_tokens else _unchanged
        self.table = validate_identifier(table, "table")
        self.schema = None if schema is None else validate_identifier(schema, "schema")
        self.max_data_size = validate_max_data_size(max_data_size)
        parts = (self.table,) if self.schema is None else (self.schema, self.table)
        #: The quoted, schema-qualified table name (safe to show; not a secret).
        self.qualified_name = sql.Identifier(*parts).as_string(None)
        # Statements always run with a parameter sequence, so psycopg reads "%" as a
        # placeholder: a "%" in a name must reach it doubled.
        ident = sql.SQL(escape_percent(self.qualified_name))
        self._find = _render(
            sql.SQL("SELECT data FROM {} WHERE token = %s AND current_timestamp < expiry").format(
                ident
            )
        )
        self._commit = _render(
            sql.SQL(
                "INSERT INTO {} (token, data, expiry) VALUES (%s, %s, %s) "
                "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry"
            ).format(ident)
        )
        # With owners, a commit without one keeps the row's owner (COALESCE), so a
        # request that merely saves a session never logs its user out of the list.
        self._commit_owned = _render(
            sql.SQL(
                "INSERT INTO {table} AS s (token, data, expiry, owner) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry, "
                "owner = COALESCE(EXCLUDED.owner, s.owner)"
            ).format(table=ident)
        )
        self._commit_many_owned = _render(
            sql.SQL(
                "INSERT INTO {table} AS s (token, data, expiry, owner) "
                "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::timestamptz[], %s::text[]) "
                "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry, "
                "owner = COALESCE(EXCLUDED.owner, s.owner)"
            ).format(table=ident)
        )
        self._create_owned = _render(
            sql.SQL(
                "INSERT INTO {table} AS s (token, data, expiry, owner) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry, "
                "owner = COALESCE(EXCLUDED.owner, s.owner) WHERE s.expiry <= current_timestamp"
            ).format(table=ident)
        )
        self._set_owner = _render(
            sql.SQL(
                "UPDATE {} SET owner = %s WHERE token = %s AND current_timestamp < expiry"
            ).format(ident)
        )
        self._sessions_of = _render(
            sql.SQL(
                "SELECT token, data, expiry FROM {} WHERE owner = %s "
                "AND current_timestamp < expiry ORDER BY expiry, token"
            ).format(ident)
        )
        # Expired rows of the owner go too: they are dead anyway.
        self._delete_owned = _render(
            sql.SQL("DELETE FROM {} WHERE owner = %s AND token IS DISTINCT FROM %s").format(ident)
        )
        self._revoke = _render(
            sql.SQL("DELETE FROM {} WHERE owner = %s AND token = %s").format(ident)
        )
        self._delete = _render(sql.SQL("DELETE FROM {} WHERE token = %s").format(ident))
        # An expired session is never brought back: only a live row is touched.
        self._touch = _render(
            sql.SQL(
                "UPDATE {} SET expiry = %s WHERE token = %s AND current_timestamp < expiry"
            ).format(ident)
        )
        # Insert, or replace an expired row; a live row is left as it is (the WHERE
        # of DO UPDATE is false, so no row is written and the count is 0).
        self._create = _render(
            sql.SQL(
                "INSERT INTO {table} AS s (token, data, expiry) VALUES (%s, %s, %s) "
                "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry "
                "WHERE s.expiry <= current_timestamp"
            ).format(table=ident)
        )
        self._expiry = _render(
            sql.SQL("SELECT expiry FROM {} WHERE token = %s AND current_timestamp < expiry").format(
                ident
            )
        )
        # A batch of `clear` walks the primary key from where the last one ended and,
        # like the purge, skips rows other transactions hold instead of waiting.
        self._clear_batch = _render(
            sql.SQL(
                "WITH deleted AS ("
                "DELETE FROM {table} WHERE token = ANY(ARRAY("
                "SELECT token FROM {table} WHERE token > %s "
                "ORDER BY token LIMIT %s FOR UPDATE SKIP LOCKED"
                ")) RETURNING token"
                ") SELECT count(*), max(token) FROM deleted"
            ).format(table=ident)
        )
        # Combined statements serve many concurrent callers in one round trip.
        self._find_many = _render(
            sql.SQL(
                "SELECT token, data FROM {} "
                "WHERE token = ANY(%s::text[]) AND current_timestamp < expiry"
            ).format(ident)
        )
        self._commit_many = _render(
            sql.SQL(
                "INSERT INTO {} (token, data, expiry) "
                "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::timestamptz[]) "
                "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry"
            ).format(ident)
        )
        self._touch_many = _render(
            sql.SQL(
                "UPDATE {table} AS s SET expiry = v.expiry "
                "FROM unnest(%s::text[], %s::timestamptz[]) AS v(token, expiry) "
                "WHERE s.token = v.token AND current_timestamp < s.expiry RETURNING s.token"
            ).format(table=ident)
        )
        self._all = _render(
            sql.SQL("SELECT token, data FROM {} WHERE current_timestamp < expiry").format(ident)
        )
        # Versions for optimistic concurrency: xmin, the id of the transaction that
        # wrote the row version, changes with every write of the row and needs no
        # column of its own, so the SCS table stays as Go apps share it. It is read
        # as bigint (xid has no ordering and no binary cast to int).
        self._find_versioned = _render(
            sql.SQL(
                "SELECT data, xmin::text::bigint, expiry FROM {} "
                "WHERE token = %s AND current_timestamp < expiry"
            ).format(ident)
        )
        self._find_versioned_many = _render(
            sql.SQL(
                "SELECT token, data, xmin::text::bigint, expiry FROM {} "
                "WHERE token = ANY(%s::text[]) AND current_timestamp < expiry"
            ).format(ident)
        )
        # A row another transaction is writing is waited for, then its WHERE is
        # evaluated again on the new version (READ COMMITTED), whose xmin differs:
        # of two saves from one version, exactly one writes.
        owner_set = ", owner = COALESCE(%s, owner)" if owners else ""
        self._update_versioned = _render(
            sql.SQL(
                "UPDATE {} SET data = %s, expiry = %s" + owner_set + " "
                "WHERE token = %s AND xmin::text::bigint = %s AND current_timestamp < expiry"
            ).format(ident)
        )
        owner_column, owner_array, owner_many = (
            (", owner", ", %s::text[]", ", owner = COALESCE(v.owner, s.owner)")
            if owners
            else ("", "", "")
        )
        self._update_versioned_many = _render(
            sql.SQL(
                "UPDATE {table} AS s SET data = v.data, expiry = v.expiry" + owner_many + " "
                "FROM unnest(%s::text[], %s::bytea[], %s::timestamptz[], %s::bigint[]"
                + owner_array
                + ") AS v(token, data, expiry, version"
                + owner_column
                + ") WHERE s.token = v.token AND s.xmin::text::bigint = v.version "
                "AND current_timestamp < s.expiry RETURNING s.token"
            ).format(table=ident)
        )
        #: The advisory lock key that lets one purge statement at a time run on
        #: this table (see `purge_steps`).
        self.purge_key = advisory_key("purge", self.qualified_name)
        # One batch is one statement, hence one transaction, so it works the same
        # through PgBouncer's transaction pooling, where a session-level lock could
        # be taken on one server connection and released on another (and leak):
        # - it takes the table's purge lock with a transaction-level try-lock, and
        #   deletes nothing when another purge statement holds it;
        # - it walks the expiry index from where the last batch ended, so no batch
        #   re-reads live rows or what earlier batches deleted;
        # - it locks the rows it picks with SKIP LOCKED: a row a commit, touch or
        #   delete holds is left for a later round, so the purge never waits on a
        #   row lock and can't take part in a deadlock, whatever order others lock
        #   rows in. The lock re-checks the expiry on the newest row version, so a
        #   session a commit has just extended is never picked, and nobody can
        #   change a picked row before the delete (no re-check needed there).
        # Rows are deleted by token, the primary key: ctid would repeat across the
        # partitions of a partitioned table.
        self._purge_batch = _render(
            sql.SQL(
                "WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(%s) AS held), "
                "deleted AS ("
                "DELETE FROM {table} WHERE token = ANY(ARRAY("
                "SELECT token FROM {table} WHERE (SELECT held FROM lock) "
                "AND expiry >= %s AND expiry < current_timestamp "
                "ORDER BY expiry LIMIT %s FOR UPDATE SKIP LOCKED"
                ")) RETURNING expiry"
                ") SELECT (SELECT held FROM lock), count(*), max(expiry) FROM deleted"
            ).format(table=ident)
        )

    # Single statements. Each validates its arguments first, so bad input never
    # reaches the database.

    def find(self, token: str) -> Statement:
        """Build the statement that reads a live session.

        Args:
            token: The session token.

        Returns:
            The statement; decode its rows with `decode_find`.

        Raises:
            TypeError: If the token is not a str.
            ValueError: If the token is invalid (see `validate_token`).
        """
        return Statement(self._find, (self._key(validate_token(token)),))

    def commit(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        owner: str | None = None,
    ) -> Statement:
        """Build the upsert that saves a session.

        Args:
            token: The session token.
            data: The payload.
            expiry: When the session expires (timezone-aware).
            owner: Who the session belongs to (only with ``owners``); None keeps
                the row's current owner.

        Returns:
            The statement.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            OwnersNotEnabledError: If an owner is given without ``owners``.
        """
        return self._save(self._commit, self._commit_owned, "commit", token, data, expiry, owner)

    def delete(self, token: str) -> Statement:
        """Build the statement that deletes a session.

        Args:
            token: The session token.

        Returns:
            The statement.

        Raises:
            TypeError: If the token is not a str.
            ValueError: If the token is invalid.
        """
        return Statement(self._delete, (self._key(validate_token(token)),))

    def touch(self, token: str, expiry: dt.datetime) -> Statement:
        """Build the statement that moves a live session's expiry.

        Args:
            token: The session token.
            expiry: The new expiry (timezone-aware).

        Returns:
            The statement; it affects one row if the session was live, else none.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If the token is invalid or the expiry naive.
        """
        # The key goes last, as in the SQL; `touch_many` reads it from there.
        return Statement(self._touch, (validate_expiry(expiry), self._key(validate_token(token))))

    def find_versioned(self, token: str) -> Statement:
        """Build the statement that reads a live session with its row's version.

        Raises:
            TypeError: If the token is not a str.
            ValueError: If the token is invalid (see `validate_token`).
        """
        return Statement(self._find_versioned, (self._key(validate_token(token)),))

    def update_versioned(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        version: int,
        owner: str | None = None,
    ) -> Statement:
        """Build the update that rewrites a live session only if its row is at `version`.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            OwnersNotEnabledError: If an owner is given without ``owners``.
        """
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"version must be an int, not {type(version).__name__}")
        query = self._update_versioned
        saved = self._save(query, query, "update_versioned", token, data, expiry, owner)
        # As the SQL names them: the key and version last, where the combined
        # statement reads them.
        key, *values = saved.params
        return Statement(query, (*values, key, version))

    def create(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        owner: str | None = None,
    ) -> Statement:
        """Build the insert that saves a new session unless a live one has the token.

        Args:
            token: The session token.
            data: The payload.
            expiry: When the session expires (timezone-aware).
            owner: Who the session belongs to (only with ``owners``).

        Returns:
            The statement; it affects one row if the session was created.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            OwnersNotEnabledError: If an owner is given without ``owners``.
        """
        return self._save(self._create, self._create_owned, "create", token, data, expiry, owner)

    def _save(
        self,
        plain: bytes,
        owned: bytes,
        operation: str,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        owner: str | None,
    ) -> Statement:
        params = (
            self._key(validate_token(token)),
            validate_data(data, self.max_data_size),
            validate_expiry(expiry),
        )
        if not self.owners:
            if owner is not None:
                raise OwnersNotEnabledError(f"{operation}(owner=...)")
            return Statement(plain, params)
        return Statement(owned, (*params, None if owner is None else validate_owner(owner)))

    # Sessions per owner: only on a table with the owner column (``owners``).

    def _need_owners(self, operation: str) -> None:
        if not self.owners:
            raise OwnersNotEnabledError(operation)

    def set_owner(self, token: str, owner: str | None) -> Statement:
        """Build the update that sets (or, with None, clears) a live session's owner.

        Args:
            token: The session token.
            owner: The new owner, or None.

        Returns:
            The statement; it affects one row if the session was live.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            OwnersNotEnabledError: Without ``owners``.
        """
        self._need_owners("set_owner")
        key = self._key(validate_token(token))
        return Statement(self._set_owner, (None if owner is None else validate_owner(owner), key))

    def sessions_of(self, owner: str) -> Statement:
        """Build the query for an owner's live sessions, soonest to expire first.

        Args:
            owner: The owner.

        Returns:
            The statement; decode its rows with `decode_owned`.

        Raises:
            TypeError: If the owner is not a str.
            ValueError: If the owner is invalid.
            OwnersNotEnabledError: Without ``owners``.
        """
        self._need_owners("sessions_of")
        return Statement(self._sessions_of, (validate_owner(owner),))

    def delete_owned(self, owner: str, keep: str | None = None) -> Statement:
        """Build the delete of every session of an owner but, optionally, one.

        Args:
            owner: The owner.
            keep: A raw token to spare (the caller's own session), or None.

        Returns:
            The statement; its row count is the number deleted.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            OwnersNotEnabledError: Without ``owners``.
        """
        self._need_owners("delete_owned")
        spared = None if keep is None else self._key(validate_token(keep))
        return Statement(self._delete_owned, (validate_owner(owner), spared))

    def revoke(self, owner: str, key: str) -> Statement:
        """Build the delete of one listed session, only if it belongs to the owner.

        Args:
            owner: The owner.
            key: The stored key, as `OwnedSession.key` gives it (not hashed again).

        Returns:
            The statement; it affects one row if the session was the owner's.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            OwnersNotEnabledError: Without ``owners``.
        """
        self._need_owners("revoke")
        return Statement(self._revoke, (validate_owner(owner), validate_token(key)))

    def failure_hint(self, exc: Exception) -> str:
        """Advice to add to a database failure, if any.

        Args:
            exc: What the database raised.

        Returns:
            How to add the owner column, when the table lacks it; else ``""``.
        """
        if self.owners and isinstance(exc, psycopg.errors.UndefinedColumn):
            return (
                "this store has owners=True but the table has no owner column; run "
                "`python -m sessionstore migrate --owners` as the table's owner"
            )
        return ""

    def expiry(self, token: str) -> Statement:
        """Build the statement that reads a live session's expiry.

        Args:
            token: The session token.

        Returns:
            The statement; decode its row with `decode_expiry`.

        Raises:
            TypeError: If the token is not a str.
            ValueError: If the token is invalid.
        """
        return Statement(self._expiry, (self._key(validate_token(token)),))

    def clear_steps(self, batch_size: int | None = None) -> Steps:
        """Delete every session in the table, in batches of at most `batch_size`.

        Like the purge, each batch is one short statement that never waits for a row
        lock: a row a concurrent commit holds is left (that commit lands after the
        clear). Needs only SELECT, UPDATE and DELETE, never TRUNCATE.

        Args:
            batch_size: The most sessions one statement deletes (default: the
                core's `purge_batch_size`).

        Returns:
            A generator that yields one statement per batch and returns how many
            sessions were deleted.

        Raises:
            TypeError: If `batch_size` is not an int.
            ValueError: If `batch_size` is not positive.
        """
        batch_size = self.purge_batch_size if batch_size is None else batch_size
        return self._clear_batches(validate_batch_size(batch_size))

    def _clear_batches(self, batch_size: int) -> Steps:
        deleted, after = 0, ""  # "" sorts before every token (tokens are never empty)
        while True:
            result: Result = yield Statement(self._clear_batch, (after, batch_size))
            count, last = result.rows[0]
            deleted += count
            if count < batch_size:
                return deleted
            after = last

    # Combined statements: concurrent calls that queue up while the store's
    # connections are busy are served together. Each takes the statements the
    # single-call builders made (so validation and token hashing happened there).

    def find_many(self, finds: Sequence[Statement]) -> Statement:
        """Combine finds built by `find` into one statement.

        Args:
            finds: The single finds.

        Returns:
            The statement; decode its rows with `decode_find_many`.
        """
        return Statement(self._find_many, ([find.params[0] for find in finds],))

    def commit_many(self, commits: Sequence[Statement]) -> Statement:
        """Combine commits built by `commit` into one upsert.

        Of several commits of one token the last one wins, as if run in order (one
        upsert can't touch a row twice). Rows are sorted by token so concurrent
        combined commits lock rows in the same order and can't deadlock.

        Args:
            commits: The single commits, in the order they were made.

        Returns:
            The statement.
        """
        latest = {commit.params[0]: commit.params for commit in commits}
        keys = sorted(latest)
        columns = (keys, [bytes(latest[key][1]) for key in keys], [latest[key][2] for key in keys])
        if not self.owners:
            return Statement(self._commit_many, columns)
        return Statement(self._commit_many_owned, (*columns, [latest[key][3] for key in keys]))

    def touch_many(self, touches: Sequence[Statement]) -> Statement:
        """Combine touches built by `touch` into one update.

        Of several touches of one token the last one wins; rows are taken in token
        order, as `commit_many` does, so combined statements lock rows in one order.

        Args:
            touches: The single touches, in the order they were made.

        Returns:
            The statement; decode its rows with `decode_touch_many`.
        """
        latest = {touch.params[1]: touch.params[0] for touch in touches}
        keys = sorted(latest)
        return Statement(self._touch_many, (keys, [latest[key] for key in keys]))

    def find_versioned_many(self, finds: Sequence[Statement]) -> Statement:
        """Combine finds built by `find_versioned` into one statement."""
        return Statement(self._find_versioned_many, ([find.params[0] for find in finds],))

    def update_versioned_many(self, updates: Sequence[Statement]) -> Statement:
        """Combine updates built by `update_versioned` into one statement.

        Only the first update of a token takes part (one statement updates a row
        once, and which of two joined rows it took could not be told); the others
        report a changed row, as they would have after it, and their callers read
        the row again. Rows are taken in token order, as `commit_many` does.
        """
        first = _first_per_key(updates)
        keys = sorted(first)
        columns = [
            keys,
            [bytes(first[key].params[0]) for key in keys],
            [first[key].params[1] for key in keys],
            [first[key].params[-1] for key in keys],
        ]
        if self.owners:
            columns.append([first[key].params[2] for key in keys])
        return Statement(self._update_versioned_many, tuple(columns))

    @staticmethod
    def payload_size(statement: Statement) -> int:
        """How many payload bytes a single commit carries (0 for other statements).

        Args:
            statement: A statement built by `commit`, `find` or `touch`.

        Returns:
            Bytes, for capping a combined commit at `MAX_BATCH_BYTES`.
        """
        for data in statement.params:  # the payload is the one bytes-like parameter
            if isinstance(data, memoryview):
                return data.nbytes
            if isinstance(data, bytes | bytearray):
                return len(data)
        return 0

    def all(self) -> Statement:
        """Build the statement that reads every live session.

        Returns:
            The statement; decode its rows with `decode_all`.
        """
        return Statement(self._all)

    def purge_steps(
        self, batch_size: int | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> Steps:
        """Delete expired sessions in batches of at most `batch_size`.

        Each batch is one statement, hence its own transaction, so none holds its
        locks or its WAL for long. No two purge statements run on the table at
        once: a batch that finds another purge's statement running deletes
        nothing, and the purge ends there (the other purge goes on).

        Args:
            batch_size: The most sessions one statement deletes (default:
                the core's `purge_batch_size`).
            should_stop: Asked before each batch; True ends the purge early.

        Returns:
            A generator that yields one statement per batch and returns how many
            sessions were deleted, or None if another purge held the table's
            purge lock at the first batch.

        Raises:
            TypeError: If `batch_size` is not an int.
            ValueError: If `batch_size` is not positive.
        """
        batch_size = self.purge_batch_size if batch_size is None else batch_size
        # Validated here, not in the generator, so bad input fails before any SQL.
        return self._purge_batches(validate_batch_size(batch_size), should_stop)

    def _purge_batches(self, batch_size: int, should_stop: Callable[[], bool]) -> Steps:
        deleted, since = 0, _BEGINNING_OF_TIME
        first = True
        while not should_stop():
            result: Result = yield Statement(self._purge_batch, (self.purge_key, since, batch_size))
            held, count, newest = result.rows[0]
            if not held:
                return None if first else deleted
            first = False
            deleted += count
            if count < batch_size:
                break
            since = newest
        return deleted

    # Decoding.

    @staticmethod
    def decode_find(row: tuple[Any, ...] | None) -> bytes | None:
        """Turn the row of a find into its result.

        Args:
            row: The row, or None when the session is missing or expired.

        Returns:
            The payload (``b""`` for an empty one), or None when not found.
        """
        if row is None:
            return None
        return bytes(row[0])

    @staticmethod
    def decode_find_many(finds: Sequence[Statement], rows: Rows) -> list[bytes | None]:
        """Give each combined find its own result.

        Args:
            finds: The single finds, as passed to `find_many`.
            rows: The combined statement's rows.

        Returns:
            One result per find, as `decode_find` would give it.
        """
        found = {token: bytes(data) for token, data in rows}
        return [found.get(find.params[0]) for find in finds]

    @staticmethod
    def decode_touch_many(touches: Sequence[Statement], rows: Rows) -> list[bool]:
        """Give each combined touch its own result: whether its session was live.

        Args:
            touches: The single touches, as passed to `touch_many`.
            rows: The combined statement's rows (the keys it updated).

        Returns:
            One bool per touch.
        """
        touched = {row[0] for row in rows}
        return [touch.params[1] in touched for touch in touches]

    @staticmethod
    def decode_versioned(row: tuple[Any, ...] | None) -> Versioned | None:
        """Turn the row of `find_versioned` into its result (None: missing or expired)."""
        if row is None:
            return None
        data, version, expiry = row
        return Versioned(bytes(data), version, expiry.astimezone(dt.UTC))

    @staticmethod
    def decode_find_versioned_many(
        finds: Sequence[Statement], rows: Rows
    ) -> list[Versioned | None]:
        """Give each combined `find_versioned` its own result."""
        found = {
            token: Versioned(bytes(data), version, expiry.astimezone(dt.UTC))
            for token, data, version, expiry in rows
        }
        return [found.get(find.params[0]) for find in finds]

    @staticmethod
    def decode_update_versioned_many(updates: Sequence[Statement], rows: Rows) -> list[bool]:
        """Give each combined `update_versioned` its own result: whether it wrote."""
        first = _first_per_key(updates)
        written = {row[0] for row in rows}
        return [
            update.params[-2] in written and first[update.params[-2]] is update
            for update in updates
        ]

    @staticmethod
    def decode_expiry(row: tuple[Any, ...] | None) -> dt.datetime | None:
        """Turn the row of `expiry` into its result, in UTC.

        Args:
            row: The row, or None when the session is missing or expired.

        Returns:
            The expiry as a timezone-aware UTC datetime, or None.
        """
        if row is None:
            return None
        expiry: dt.datetime = row[0]
        return expiry.astimezone(dt.UTC)

    @staticmethod
    def decode_owned(rows: Rows) -> list[OwnedSession]:
        """Turn the rows of `sessions_of` into `OwnedSession` values.

        Args:
            rows: The rows.

        Returns:
            A new list, soonest to expire first.
        """
        return [
            OwnedSession(key, bytes(data), expiry.astimezone(dt.UTC)) for key, data, expiry in rows
        ]

    @staticmethod
    def decode_all(rows: Rows) -> dict[str, bytes]:
        """Turn the rows of `all` into a dict of token to payload.

        Args:
            rows: The rows.

        Returns:
            A new dict, empty when there are no live sessions.
        """
        return {token: bytes(data) for token, data in rows}

    # Prefix deletes: every key that starts with a prefix, e.g. one namespace of a
    # key-value store kept in the table (the Litestar integration's `delete_all`).
    # Rendered on first use, so the hot path's setup is untouched.

    def delete_prefix_steps(self, prefix: str, batch_size: int | None = None) -> Steps:
        """Delete every session whose stored key starts with `prefix`, in batches.

        Batches work as `clear_steps`' do (the primary key walked from where the
        last batch ended, rows other transactions hold skipped, never waited for),
        but only rows whose key starts with `prefix` are deleted, live or expired.

        Args:
            prefix: The start of the keys to delete (checked like a token).
            batch_size: The most sessions one statement deletes (default: the
                core's `purge_batch_size`).

        Returns:
            A generator that yields one statement per batch and returns how many
            sessions were deleted.

        Raises:
            TypeError: If `prefix` is not a str or `batch_size` not an int.
            ValueError: If `prefix` is invalid (see `validate_token`),
                `batch_size` is not positive, or the core hashes tokens (a hashed
                key keeps nothing of the key's prefix).
        """
        validate_token(prefix)
        if self.hash_tokens:
            raise ValueError(
                "delete_prefix needs hash_tokens=False: a hashed key keeps no prefix to match"
            )
        batch_size = self.purge_batch_size if batch_size is None else batch_size
        validate_batch_size(batch_size)
        if self._delete_prefix_batch is None:
            ident = sql.SQL(escape_percent(self.qualified_name))
            # starts_with() compares code points, whatever the column's collation; the
            # walk orders by the collation, as `clear` does, and only continues from
            # the last key a batch deleted.
            self._delete_prefix_batch = _render(
                sql.SQL(
                    "WITH deleted AS ("
                    "DELETE FROM {table} WHERE token = ANY(ARRAY("
                    "SELECT token FROM {table} WHERE token > %s AND starts_with(token, %s) "
                    "ORDER BY token LIMIT %s FOR UPDATE SKIP LOCKED"
                    ")) RETURNING token"
                    ") SELECT count(*), max(token) FROM deleted"
                ).format(table=ident)
            )
        return self._prefix_batches(self._delete_prefix_batch, prefix, batch_size)

    #: The batch statement of `delete_prefix_steps`, once rendered.
    _delete_prefix_batch: bytes | None = None

    @staticmethod
    def _prefix_batches(query: bytes, prefix: str, batch_size: int) -> Steps:
        deleted, after = 0, ""  # "" sorts before every key (keys are never empty)
        while True:
            result: Result = yield Statement(query, (after, prefix, batch_size))
            count, last = result.rows[0]
            deleted += count
            if count < batch_size:
                return deleted
            after = last

    # Update only if live (added for the Django integration's UpdateError).

    def update(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        owner: str | None = None,
    ) -> Statement:
        """Build the update that rewrites a live session; a missing or expired one is left alone.

        Args:
            token: The session token.
            data: The payload.
            expiry: When the session expires (timezone-aware).
            owner: Who the session belongs to (only with ``owners``); None keeps the
                row's current owner.

        Returns:
            The statement; it affects one row if the session was live, else none.

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If an argument is invalid.
            OwnersNotEnabledError: If an owner is given without ``owners``.
        """
        ident = sql.SQL(escape_percent(self.qualified_name))
        plain = _render(
            sql.SQL(
                "UPDATE {} SET data = %s, expiry = %s "
                "WHERE token = %s AND current_timestamp < expiry"
            ).format(ident)
        )
        owned = _render(
            sql.SQL(
                "UPDATE {} SET data = %s, expiry = %s, owner = COALESCE(%s, owner) "
                "WHERE token = %s AND current_timestamp < expiry"
            ).format(ident)
        )
        saved = self._save(plain, owned, "update", token, data, expiry, owner)
        # _save orders the parameters as the inserts take them (key first); the
        # UPDATE names the key last.
        key, *rest = saved.params
        return Statement(saved.query, (*rest, key))
