"""The sans-IO core shared by `Store` and `AsyncStore`: statement builders and decoders.

A builder validates its arguments (`_validate.py`) and pairs the table's rendered SQL
(`_sql.py`) with them; a multi-statement operation is a generator, in the style of
psycopg's ``generators.py``, that yields each `Statement` and receives its `Result`,
so one flow drives both facades. Nothing here does I/O. See docs/usage.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from ._sql import DETECT_CITUS, DETECT_DISTRIBUTED, Statements, advisory_key
from ._validate import (
    DEFAULT_MAX_DATA_SIZE,
    validate_batch_size,
    validate_data,
    validate_expiry,
    validate_grace,
    validate_identifier,
    validate_int,
    validate_max_data_size,
    validate_max_sessions,
    validate_token,
)

# The integrations and the session manager import these four from here.
from ._validate import MAX_TOKEN_LENGTH as MAX_TOKEN_LENGTH
from ._validate import hash_token as hash_token
from ._validate import new_token as new_token
from ._validate import validate_owner as validate_owner
from .errors import ConcurrentUpdateError, OwnersNotEnabledError

if TYPE_CHECKING:  # crypto needs the optional `cryptography`; only a store with a keyring does
    from .crypto import Keyring

#: Where a row that does not decrypt is reported (never with its token or key).
logger = logging.getLogger("sessionstore.crypto")

#: How many times an encrypted rotation reads a session that others keep writing.
MAX_ROTATION_READS = 16

#: The default number of expired sessions one purge statement deletes.
DEFAULT_PURGE_BATCH_SIZE = 5000

DEFAULT_TABLE = "sessions"

#: Where a purge's walk along the expiry index starts.
_BEGINNING_OF_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)

#: How many fresh tokens to try before giving up (`rotate_steps`, the manager's
#: ``_create``). A collision of two 256-bit random tokens never happens in
#: practice; a second one in a row means a broken random source.
FRESH_TOKEN_ATTEMPTS = 3

#: Rows returned by a statement, as psycopg gives them.
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement for a facade to execute: rendered SQL (bytes) and its parameters.

    `lock`, when set, is an advisory lock to run first, in one transaction with it;
    `trim` makes it a capped write on Citus, run as `SessionCore.capped_steps`.
    """

    query: bytes
    params: Sequence[Any] = ()
    lock: Statement | None = None
    trim: Statement | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """What a facade sends back into a generator: the rows and the server's row count."""

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

#: Data as a builder takes it.
Data = bytes | bytearray | memoryview


def _plain(key: str, data: bytes) -> bytes:
    """A row's data as stored, on a store without encryption."""
    return bytes(data)


def _first_per_key(updates: Sequence[Statement]) -> dict[str, Statement]:
    """The first of `updates` for each stored key (an `update_versioned`'s key is second last)."""
    first: dict[str, Statement] = {}
    for update in updates:
        first.setdefault(update.params[-2], update)
    return first


def _citus(query: bytes | None) -> bytes:
    """A statement only distributed tables have (rendered for them by `use_distributed`)."""
    if query is None:
        raise RuntimeError("a Citus statement was asked of a table not known to be distributed")
    return query


def _utc(expiry: dt.datetime) -> dt.datetime:
    return expiry.astimezone(dt.UTC)


class SessionCore:
    """Validation, SQL and decoding for one sessions table; one per store.

    It takes the store's options and raises as `AsyncStore` documents; the builders'
    arguments and errors are documented on the store methods that call them.
    """

    def __init__(
        self,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        max_data_size: int = DEFAULT_MAX_DATA_SIZE,
        purge_batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
        hash_tokens: bool = False,
        owners: bool = False,
        distributed: bool | None = None,
        max_sessions_per_owner: int | None = None,
        encryption: Keyring | None = None,
    ) -> None:
        if encryption is not None:
            from .crypto import Keyring

            if not isinstance(encryption, Keyring):
                kind = type(encryption).__name__
                raise TypeError(f"encryption must be a sessionstore.crypto.Keyring, not {kind}")
        self.encryption = encryption
        #: Turns a row's stored data into its plaintext, given the row's key; None
        #: (after a warning) for data that does not decrypt.
        self.decode_data: Callable[[str, bytes], bytes | None] = (
            _plain if encryption is None else self._decrypt
        )
        self.purge_batch_size = validate_batch_size(purge_batch_size)
        self.owners = bool(owners)
        self.max_sessions_per_owner = validate_max_sessions(max_sessions_per_owner, self.owners)
        self.hash_tokens = bool(hash_tokens)
        self._key: Callable[[str], str] = hash_token if hash_tokens else str  # str: as it is
        self.table = validate_identifier(table, "table")
        self.schema = None if schema is None else validate_identifier(schema, "schema")
        self.max_data_size = validate_max_data_size(max_data_size)
        parts = (self.table,) if self.schema is None else (self.schema, self.table)
        #: The quoted, schema-qualified table name (safe to show; not a secret).
        self.qualified_name = sql.Identifier(*parts).as_string(None)
        #: Whether Citus distributes the table; None until known (`use_distributed`).
        self.distributed = None if distributed is None else bool(distributed)
        self.sql = Statements.render(self.qualified_name, self.owners, bool(distributed))
        #: The advisory lock key that lets one purge statement at a time run on
        #: this table (see `purge_steps`).
        self.purge_key = advisory_key("purge", self.qualified_name)

    def detect_steps(self) -> Steps:
        """Whether Citus distributes the table, from the catalogs; None if the table is missing."""
        found: Result = yield Statement(DETECT_CITUS, (self.qualified_name,))
        exists, citus = found.rows[0]
        if not exists:
            return None  # maybe created later (and distributed): ask again then
        if not citus:
            return False
        found = yield Statement(DETECT_DISTRIBUTED, (self.qualified_name,))
        return bool(found.rows[0][0])

    def _stored(self, token: str) -> str:
        """The key a token is stored under, the token checked."""
        return self._key(validate_token(token))

    def _batch_size(self, batch_size: int | None) -> int:
        """`batch_size`, checked, or the store's `purge_batch_size` for None."""
        return self.purge_batch_size if batch_size is None else validate_batch_size(batch_size)

    def use_distributed(self, distributed: bool) -> None:
        """Render the statements for a distributed table (Citus) or a plain one."""
        self.sql = Statements.render(self.qualified_name, self.owners, distributed)
        self.distributed = distributed

    # Single statements.

    def find(self, token: str) -> Statement:
        """Read a live session (decode with `decode_find`)."""
        return Statement(self.sql.find, (self._stored(token),))

    def expiry(self, token: str) -> Statement:
        """Read a live session's expiry (decode with `decode_expiry`)."""
        return Statement(self.sql.expiry, (self._stored(token),))

    def delete(self, token: str) -> Statement:
        """Delete a session."""
        return Statement(self.sql.delete, (self._stored(token),))

    def all(self) -> Statement:
        """Read every live session (decode with `decode_all`)."""
        return Statement(self.sql.all)

    def commit(
        self, token: str, data: Data, expiry: dt.datetime, owner: str | None = None
    ) -> Statement:
        """Upsert a session; with owners, a None owner keeps the row's (see `_capped`)."""
        saved = self._save(self.sql.commit, "commit", token, data, expiry, owner)
        return self._capped(saved, self.sql.commit_capped, saved.params[0], owner)

    def create(
        self, token: str, data: Data, expiry: dt.datetime, owner: str | None = None
    ) -> Statement:
        """Insert a session unless a live one has the token (one row if created; `_capped`)."""
        saved = self._save(self.sql.create, "create", token, data, expiry, owner)
        key = saved.params[0]
        if self.distributed:  # the Citus form names the key twice (see `_sql`)
            saved = Statement(saved.query, (key, *saved.params))
        return self._capped(saved, self.sql.create_capped, key, owner)

    def update(
        self, token: str, data: Data, expiry: dt.datetime, owner: str | None = None
    ) -> Statement:
        """Rewrite a live session, leaving a missing or expired one alone (one row if live)."""
        return self._save(self.sql.update, "update", token, data, expiry, owner, key_last=True)

    def touch(self, token: str, expiry: dt.datetime) -> Statement:
        """Move a live session's expiry (one row affected if it was live)."""
        # The key goes last, as in the SQL; `touch_many` reads it from there.
        return Statement(self.sql.touch, (validate_expiry(expiry), self._stored(token)))

    def find_versioned(self, token: str) -> Statement:
        """Read a live session with its row's version (decode with `decode_versioned`)."""
        return Statement(self.sql.find_versioned, (self._stored(token),))

    def update_versioned(
        self, token: str, data: Data, expiry: dt.datetime, version: int, owner: str | None = None
    ) -> Statement:
        """Rewrite a live session only if its row is still at `version`."""
        validate_int(version, "version")
        query = self.sql.update_versioned
        saved = self._save(query, "update_versioned", token, data, expiry, owner, key_last=True)
        # The version last, as the SQL names it, where the combined statement reads it.
        return Statement(query, (*saved.params, version))

    def _save(
        self,
        query: bytes,
        operation: str,
        token: str,
        data: Data,
        expiry: dt.datetime,
        owner: str | None,
        *,
        key_last: bool = False,
    ) -> Statement:
        """Validate a write's arguments into `query`'s (key, data, expiry[, owner]).

        With `key_last`, the key goes after the others, as an UPDATE's WHERE names it.
        """
        key = self._stored(token)
        payload = validate_data(data, self.max_data_size)  # the limit is on the plaintext
        expires = validate_expiry(expiry)
        values: tuple[Any, ...] = (self._seal(key, payload), expires)
        if self.owners:
            values += (None if owner is None else validate_owner(owner),)
        elif owner is not None:
            raise OwnersNotEnabledError(f"{operation}(owner=...)")
        return Statement(query, (*values, key) if key_last else (key, *values))

    def _seal(self, key: str, plain: Data) -> Data:
        """`plain` as the row under `key` stores it: encrypted for the key, with a keyring."""
        return plain if self.encryption is None else self.encryption.encrypt(plain, key.encode())

    # Sessions per owner: only on a table with the owner column (``owners``).

    def _need_owners(self, operation: str) -> None:
        if not self.owners:
            raise OwnersNotEnabledError(operation)

    def set_owner(self, token: str, owner: str | None) -> Statement:
        """Set (or, with None, clear) a live session's owner (one row if live; `_capped`)."""
        self._need_owners("set_owner")
        key = self._stored(token)
        saved = Statement(
            self.sql.set_owner, (None if owner is None else validate_owner(owner), key)
        )
        return self._capped(saved, self.sql.set_owner_capped, key, owner)

    def _capped(self, saved: Statement, capped: bytes, key: str, owner: str | None) -> Statement:
        """`saved`, or with a cap and an owner, `capped` (a row per session written), locked."""
        if self.max_sessions_per_owner is None or owner is None:
            return saved
        lock = Statement(self.sql.owner_lock, (advisory_key("owner", self.qualified_name, owner),))
        kept = self.max_sessions_per_owner - 1
        if self.distributed:
            trim = Statement(_citus(self.sql.victims), (owner, key, kept))
            return Statement(saved.query, saved.params, lock, trim)
        return Statement(capped, (*saved.params, kept), lock)

    def capped(self, owner: str | None) -> bool:
        """Whether a write that gives a session `owner` trims the owner's sessions."""
        return owner is not None and self.max_sessions_per_owner is not None

    def capped_steps(self, write: Statement) -> Steps:
        """The statements of a capped write on Citus (`_capped`, `_sql`), for one transaction."""
        assert write.lock is not None
        assert write.trim is not None
        owner = write.trim.params[0]
        anchor = advisory_key("owner-anchor", self.qualified_name, owner)
        yield Statement(_citus(self.sql.owner_anchor), (anchor, owner))
        yield write.lock
        written: Result = yield Statement(write.query, write.params)
        victims: Result = yield write.trim
        if written.rowcount and victims.rows:
            yield Statement(_citus(self.sql.trim), ([token for (token,) in victims.rows],))
        return written.rowcount

    def sessions_of(self, owner: str) -> Statement:
        """Read an owner's live sessions, soonest to expire first (decode with `decode_owned`)."""
        self._need_owners("sessions_of")
        return Statement(self.sql.sessions_of, (validate_owner(owner),))

    def delete_owned(self, owner: str, keep: str | None = None) -> Statement:
        """Delete every session of an owner but the one of the raw token `keep`, if given."""
        self._need_owners("delete_owned")
        spared = None if keep is None else self._stored(keep)
        return Statement(self.sql.delete_owned, (validate_owner(owner), spared))

    def revoke(self, owner: str, key: str) -> Statement:
        """Delete the session stored under `key` (not hashed again) if it is the owner's."""
        self._need_owners("revoke")
        return Statement(self.sql.revoke, (validate_owner(owner), validate_token(key)))

    def failure_hint(self, exc: Exception) -> str:
        """How to add the owner column, when a failure says the table lacks it; else ``""``."""
        if self.owners and isinstance(exc, psycopg.errors.UndefinedColumn):
            return (
                "this store has owners=True but the table has no owner column; run "
                "`python -m sessionstore migrate --owners` as the table's owner"
            )
        return ""

    # Combined statements serve queued concurrent calls together, from the statements
    # the single-call builders made (validated and hashed there). Rows go in token
    # order, so concurrent combined statements lock rows in one order: no deadlock.

    def find_many(self, finds: Sequence[Statement]) -> Statement:
        """Combine finds built by `find` (decode with `decode_find_many`)."""
        return Statement(self.sql.find_many, ([find.params[0] for find in finds],))

    def commit_many(self, commits: Sequence[Statement]) -> Statement:
        """Combine commits built by `commit`; of several of one token the last wins, as in order."""
        latest = {commit.params[0]: commit.params for commit in commits}
        keys = sorted(latest)
        columns = [keys, [bytes(latest[key][1]) for key in keys], [latest[key][2] for key in keys]]
        if self.owners:
            columns.append([latest[key][3] for key in keys])
        return Statement(self.sql.commit_many, tuple(columns))

    def touch_many(self, touches: Sequence[Statement]) -> Statement:
        """Combine touches built by `touch`; the last of one token wins (`decode_touch_many`)."""
        latest = {touch.params[1]: touch.params[0] for touch in touches}
        keys = sorted(latest)
        return Statement(self.sql.touch_many, (keys, [latest[key] for key in keys]))

    def find_versioned_many(self, finds: Sequence[Statement]) -> Statement:
        """Combine finds built by `find_versioned`."""
        return Statement(self.sql.find_versioned_many, ([find.params[0] for find in finds],))

    def update_versioned_many(self, updates: Sequence[Statement]) -> Statement:
        """Combine updates built by `update_versioned`; only the first of each token takes part."""
        # One statement updates a row once, and which of two joined rows it took could
        # not be told; the others report a changed row, as they would have after it,
        # and their callers read the row again.
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
        return Statement(self.sql.update_versioned_many, tuple(columns))

    @staticmethod
    def payload_size(statement: Statement) -> int:
        """The payload bytes of a single statement (0 but for writes), for `MAX_BATCH_BYTES`."""
        if statement.lock is not None:
            # It needs its own transaction, so it counts as more than any batch may
            # carry: the batchers run it alone, as they do a payload over the cap.
            return sys.maxsize
        for data in statement.params:  # the payload is the one bytes-like parameter
            if isinstance(data, memoryview):
                return data.nbytes
            if isinstance(data, bytes | bytearray):
                return len(data)
        return 0

    def rotate_steps(self, token: str, grace: dt.timedelta, prefix: str = "") -> Steps:
        """Copy a live session to a fresh token, the old one kept for `grace` (see `rotate`)."""
        old = self._key(validate_token(token))
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        validate_token(prefix + new_token())  # the fresh tokens' shape, before any SQL
        return self._rotations(old, validate_grace(grace), prefix)

    def _rotations(self, old: str, grace: dt.timedelta, prefix: str) -> Steps:
        """The statements of `rotate_steps`, its arguments checked."""
        if self.distributed:  # read when the steps start, as in `_purge_batches`
            return (yield from self._distributed_rotations(old, grace, prefix))
        if self.encryption is not None:
            return (yield from self._encrypted_rotations(self.encryption, old, grace, prefix))
        for _ in range(FRESH_TOKEN_ATTEMPTS):
            token = prefix + new_token()
            params = (old, grace, self._key(token), grace, old)
            result: Result = yield Statement(self.sql.rotate, params)
            found, created = result.rows[0]
            if created:
                return token
            if not found:
                return None
        raise RuntimeError(f"no free session token after {FRESH_TOKEN_ATTEMPTS} attempts")

    def _encrypted_rotations(
        self, keyring: Keyring, old: str, grace: dt.timedelta, prefix: str
    ) -> Steps:
        """`_rotations` on an encrypting store: read, encrypt for the new key, write."""
        token = prefix + new_token()
        for _ in range(MAX_ROTATION_READS):
            read: Result = yield Statement(self.sql.rotate_read, (old, grace))
            if not read.rows:
                return None
            data, version = read.rows[0]
            plain = self._decrypt(old, data)
            if plain is None:
                return None
            key = self._key(token)
            sealed = keyring.encrypt(plain, key.encode())
            params = (old, grace, version, key, sealed, grace, old)
            result: Result = yield Statement(self.sql.rotate_encrypted, params)
            found, created = result.rows[0]
            if created:
                return token
            if found:  # the fresh token was taken: another one
                token = prefix + new_token()
            # Else the row was written since it was read (or rotated): read it again.
        raise ConcurrentUpdateError(
            f"the session was written {MAX_ROTATION_READS} times while it was being rotated"
        )

    def _distributed_rotations(self, old: str, grace: dt.timedelta, prefix: str) -> Steps:
        """`_rotations` on Citus: lock and read the old row, create the new one, cut the old."""
        read: Result = yield Statement(_citus(self.sql.rotate_lock), (grace, old, grace))
        if not read.rows:
            return None
        data, expiry, cut, *owner = read.rows[0]
        plain = self.decode_data(old, data)
        if plain is None:
            return None
        for _ in range(FRESH_TOKEN_ATTEMPTS):
            token = prefix + new_token()
            key = self._key(token)
            params = (key, key, self._seal(key, plain), expiry, *owner)
            created: Result = yield Statement(self.sql.create, params)
            if created.rowcount:
                yield Statement(self.sql.touch, (cut, old))
                return token
        raise RuntimeError(f"no free session token after {FRESH_TOKEN_ATTEMPTS} attempts")

    # Batched deletes (docs/cleanup.md#how-a-purge-runs); batch sizes are validated when
    # the steps are made, so bad input fails before any SQL.

    def purge_steps(
        self, batch_size: int | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> Steps:
        """Delete expired sessions in batches (`should_stop` asked before each); count, or None."""
        return self._purge_batches(self._batch_size(batch_size), should_stop)

    def _purge_batches(self, batch_size: int, should_stop: Callable[[], bool]) -> Steps:
        # Which form is read when the steps start: a store learns whether the table
        # is distributed after it made them (and validated their arguments).
        if self.distributed:
            return (yield from self._purge_distributed(should_stop))
        deleted: int | None = None  # None until a batch held the purge lock
        since = _BEGINNING_OF_TIME
        while not should_stop():
            result: Result = yield Statement(
                self.sql.purge_batch, (self.purge_key, since, batch_size)
            )
            held, count, since = result.rows[0]
            if not held:
                return deleted
            deleted = (deleted or 0) + count
            if count < batch_size:
                break
        return deleted or 0

    def _purge_distributed(self, should_stop: Callable[[], bool]) -> Steps:
        """On Citus: the purge lock, then one DELETE on every shard; run in one transaction."""
        if should_stop():
            return 0
        lock: Result = yield Statement(_citus(self.sql.purge_lock), (self.purge_key,))
        if not lock.rows[0][0]:
            return None
        deleted: Result = yield Statement(_citus(self.sql.purge))
        return deleted.rowcount

    def _delete_distributed(self, query: bytes | None, params: tuple[str, ...]) -> Steps:
        """On Citus: wait for the purge lock, then one DELETE on every shard (one transaction)."""
        yield Statement(_citus(self.sql.delete_lock), (self.purge_key,))
        deleted: Result = yield Statement(_citus(query), params)
        return deleted.rowcount

    def clear_steps(self, batch_size: int | None = None) -> Steps:
        """Delete every session in batches that never wait for a row lock; return the count."""
        return self._key_batches("clear", (), self._batch_size(batch_size))

    def delete_prefix_steps(self, prefix: str, batch_size: int | None = None) -> Steps:
        """Delete every session whose stored key starts with `prefix`, as `clear_steps` does."""
        validate_token(prefix)
        if self.hash_tokens:
            raise ValueError(
                "delete_prefix needs hash_tokens=False: a hashed key keeps no prefix to match"
            )
        return self._key_batches("delete_prefix", (prefix,), self._batch_size(batch_size))

    def reencrypt_steps(self, batch_size: int | None = None) -> Steps:
        """Rewrite every live row not under the keyring's first key, in batches; return how many."""
        if self.encryption is None:
            raise ValueError("reencrypt needs a store made with encryption=Keyring(...)")
        return self._reencrypt_batches(self.encryption, self._batch_size(batch_size))

    def _reencrypt_batches(self, keyring: Keyring, batch_size: int) -> Steps:
        """The batches of `reencrypt_steps`."""
        rewritten, after = 0, ""  # "" sorts before every key (keys are never empty)
        prefix = keyring.prefix
        while True:
            read: Result = yield Statement(
                self.sql.reencrypt_batch, (after, len(prefix), prefix, batch_size)
            )
            rewrites = []
            for key, data, version, expiry in read.rows:
                plain = self.decode_data(key, data)
                if plain is not None:
                    rewrites.append((key, keyring.encrypt(plain, key.encode()), expiry, version))
            if rewrites:
                # As update_versioned_many's unnest takes them; a NULL owner keeps the row's.
                columns = [list(column) for column in zip(*rewrites, strict=True)]
                if self.owners:
                    columns.append([None] * len(rewrites))
                written: Result = yield Statement(self.sql.update_versioned_many, tuple(columns))
                rewritten += len(written.rows)
            if len(read.rows) < batch_size:
                return rewritten
            after = read.rows[-1][0]

    def _key_batches(self, operation: str, where: tuple[str, ...], batch_size: int) -> Steps:
        """Walk the primary key in batches of `operation` from where the last batch ended."""
        if self.distributed:  # read when the steps start, as in `_purge_batches`
            return (yield from self._delete_distributed(getattr(self.sql, operation), where))
        query: bytes = getattr(self.sql, f"{operation}_batch")
        deleted, after = 0, ""  # "" sorts before every key (keys are never empty)
        while True:
            result: Result = yield Statement(query, (after, *where, batch_size))
            count, last = result.rows[0]
            deleted += count
            if count < batch_size:
                return deleted
            after = last

    # Decoding. A row whose data does not decrypt reads as no session (`_decrypt`).

    def _decrypt(self, key: str, data: bytes) -> bytes | None:
        """The plaintext of a row's data, or None, with one warning, if it does not decrypt."""
        assert self.encryption is not None
        try:
            return self.encryption.decrypt(data, key.encode())
        except ValueError as exc:
            # The key is a credential (or leads to one): the warning names the table only.
            logger.warning("a session in %s reads as no session: %s", self.qualified_name, exc)
            return None

    def decode_find(self, find: Statement, row: tuple[Any, ...] | None) -> bytes | None:
        """The payload of a find's row (``b""`` for an empty one), or None when not found."""
        return None if row is None else self.decode_data(find.params[0], row[0])

    def decode_find_many(self, finds: Sequence[Statement], rows: Rows) -> list[bytes | None]:
        """Each combined find's result, as `decode_find` gives it."""
        found = {token: self.decode_data(token, data) for token, data in rows}
        return [found.get(find.params[0]) for find in finds]

    @staticmethod
    def decode_nothing(statement: Statement, result: None) -> None:
        """A commit's result: nothing."""

    @staticmethod
    def decode_commit_many(commits: Sequence[Statement], result: None) -> list[None]:
        """Each combined commit's result: nothing."""
        return [None] * len(commits)

    @staticmethod
    def decode_written(statement: Statement, rowcount: int) -> bool:
        """Whether a write (a touch, an update) wrote, from its row count."""
        return bool(rowcount)

    @staticmethod
    def decode_touch_many(touches: Sequence[Statement], rows: Rows) -> list[bool]:
        """Each combined touch's result: whether its session was live."""
        touched = {row[0] for row in rows}
        return [touch.params[1] in touched for touch in touches]

    def decode_versioned(self, find: Statement, row: tuple[Any, ...] | None) -> Versioned | None:
        """The `Versioned` of a `find_versioned` row, or None when missing or expired."""
        return None if row is None else self._versioned(find.params[0], *row)

    def _versioned(
        self, key: str, data: bytes, version: int, expiry: dt.datetime
    ) -> Versioned | None:
        """A `Versioned` of a row's columns, or None if its data does not decrypt."""
        plain = self.decode_data(key, data)
        return None if plain is None else Versioned(plain, version, _utc(expiry))

    def decode_find_versioned_many(
        self, finds: Sequence[Statement], rows: Rows
    ) -> list[Versioned | None]:
        """Each combined `find_versioned`'s result."""
        found = {row[0]: self._versioned(*row) for row in rows}
        return [found.get(find.params[0]) for find in finds]

    @staticmethod
    def decode_update_versioned_many(updates: Sequence[Statement], rows: Rows) -> list[bool]:
        """Each combined `update_versioned`'s result: whether it wrote."""
        first = _first_per_key(updates)
        written = {row[0] for row in rows}
        return [
            update.params[-2] in written and first[update.params[-2]] is update
            for update in updates
        ]

    @staticmethod
    def decode_expiry(row: tuple[Any, ...] | None) -> dt.datetime | None:
        """The expiry of an `expiry` row in UTC, or None when missing or expired."""
        return None if row is None else _utc(row[0])

    def decode_owned(self, rows: Rows) -> list[OwnedSession]:
        """The `OwnedSession` values of `sessions_of` rows, soonest to expire first."""
        opened = [(key, self.decode_data(key, data), expiry) for key, data, expiry in rows]
        return [
            OwnedSession(key, data, _utc(expiry))
            for key, data, expiry in opened
            if data is not None
        ]

    def decode_all(self, rows: Rows) -> dict[str, bytes]:
        """The rows of `all` as a new dict of token to payload."""
        opened = ((token, self.decode_data(token, data)) for token, data in rows)
        return {token: data for token, data in opened if data is not None}
