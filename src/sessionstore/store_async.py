"""`AsyncStore`: the session store for asyncio code, on a `psycopg_pool.AsyncConnectionPool`.

A thin facade over the sans-IO core (`SessionCore` validates, builds the SQL and
decodes the rows); only this file borrows connections. ``tools/async_to_sync.py``
generates the sync facade, `store.py`, from it. See docs/usage.md.
"""

from __future__ import annotations

# async-only: begin
import asyncio

# async-only: end
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from . import _fork
from ._batch_async import AsyncBatcher
from ._concurrency import Depth
from ._core import (
    DEFAULT_PURGE_BATCH_SIZE,
    DEFAULT_TABLE,
    OwnedSession,
    Result,
    SessionCore,
    Statement,
    Steps,
    Versioned,
)
from ._pool import MIN_RETRIES, NOT_AUTOCOMMIT, Fetch, binary_results, pool_type_error
from ._validate import DEFAULT_MAX_DATA_SIZE, validate_batch_size
from ._wire import direct, run
from .cleanup import AsyncCleanupStrategy, Cancellation, TaskCleanup, cancelling

# sync-only: from .cleanup.thread import LazyStart
from .errors import DatabaseError, should_retry
from .metrics import OnOperation, measure, recorder_for
from .schema import create_table_hint, create_table_steps, owner_index_steps

if TYPE_CHECKING:
    from .crypto import Keyring

logger = logging.getLogger("sessionstore.store")

__all__ = ["AsyncStore"]

T = TypeVar("T")


def _no_hint(exc: psycopg.Error) -> str:
    """No hint for a failure's message (the operations whose failures need none)."""
    return ""


class AsyncStore:
    """A PostgreSQL session store for asyncio, the Python port of SCS's pgxstore.

    Expiry is judged by the database's clock. The store never closes `pool`. Its
    operations work at once; its cleanup task starts when the store is entered or opened
    (a task needs a running loop). Concurrent finds, commits, touches and versioned calls
    are combined into shared statements (docs/usage.md#concurrency).

    Every method checks its arguments before any SQL runs and raises `TypeError` or
    `ValueError` for bad ones (docs/usage.md#bad-input). A failure of the database, the
    network or the pool raises `DatabaseError`; a use in a child after `os.fork`,
    `ForkedProcessError`; an ``owner`` or a per-owner method without ``owners=True``,
    `OwnersNotEnabledError`.

    Args:
        pool: The pool to borrow connections from; an autocommit one
            (``kwargs={"autocommit": True}``) saves a round trip per operation.
        table: The sessions table's name (any text: it is always quoted).
        schema: The table's schema, or None to follow the search_path.
        cleanup: When to purge expired sessions: `TaskCleanup` every 5 minutes by
            default; `NoCleanup` to disable it.
        max_data_size: The largest payload a write accepts, in bytes.
        purge_batch_size: The most expired sessions one purge statement deletes.
        hash_tokens: Store only the SHA-256 of each token (as SCS's
            ``HashTokenInStore``), so a leaked table or backup holds no usable session.
        owners: Keep sessions per user in the table's nullable ``owner`` column
            (``migrate --owners`` adds it), for `sessions_of`, `delete_owned`, `revoke`
            and `set_owner` (docs/users.md).
        max_sessions_per_owner: The most live sessions one owner keeps (needs
            ``owners=True``), or None: a `commit`, `create` or `set_owner` that gives a
            session an owner deletes the owner's other live sessions beyond it, soonest
            to expire first, also under concurrent logins (docs/users.md).
        encryption: Encrypt the session data at rest with this `Keyring`
            (docs/encryption.md); a row that does not decrypt reads as no session, with a
            warning.
        on_operation: Where each operation's duration and outcome go (see
            `sessionstore.metrics`); None records OpenTelemetry metrics if
            ``opentelemetry-api`` is installed, and nothing otherwise.
        distributed: Whether Citus distributes the table; None asks the catalogs once,
            when it first matters (docs/scaling.md#citus).

    Raises:
        TypeError: If `pool` is not an `AsyncConnectionPool`, or an option has the
            wrong type.
        ValueError: If a name or size is invalid, or `max_sessions_per_owner` is below
            1 or given without ``owners=True``.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        cleanup: AsyncCleanupStrategy | None = None,
        max_data_size: int = DEFAULT_MAX_DATA_SIZE,
        purge_batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
        hash_tokens: bool = False,
        owners: bool = False,
        max_sessions_per_owner: int | None = None,
        encryption: Keyring | None = None,
        on_operation: OnOperation | None = None,
        distributed: bool | None = None,
    ) -> None:
        if not isinstance(pool, AsyncConnectionPool):
            raise pool_type_error(pool, AsyncConnectionPool)
        self._pool = pool
        self._told_autocommit = False  # the "not autocommit" advice is logged once
        self._core = SessionCore(
            table,
            schema,
            max_data_size,
            purge_batch_size,
            hash_tokens,
            owners=owners,
            distributed=distributed,
            max_sessions_per_owner=max_sessions_per_owner,
            encryption=encryption,
        )
        self._metrics = recorder_for(on_operation, self._core.schema, self._core.table)
        if self._metrics is not None:
            # Only then: without a recorder the hot path is the plain `_query`, no check added.
            self._query = self._timed_query  # type: ignore[method-assign]
        self._start_batchers()
        _fork.track(self._after_fork_in_child)
        self._cleanup: AsyncCleanupStrategy = TaskCleanup() if cleanup is None else cleanup
        # async-only: begin
        self._opened = False  # a task needs a running loop: the cleanup starts in open()
        # async-only: end
        # sync-only: self._starter = LazyStart(self._cleanup, self)
        # sync-only: self._starter.start_if_open()

    @property
    def name(self) -> str:
        """The quoted, schema-qualified name of the sessions table."""
        return self._core.qualified_name

    @property
    def table(self) -> str:
        """The sessions table's name, as given (unquoted)."""
        return self._core.table

    @property
    def schema(self) -> str | None:
        """The table's schema, as given, or None when the search_path finds the table."""
        return self._core.schema

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """The connection pool the store borrows from (the caller's; never closed here)."""
        return self._pool

    @property
    def owners(self) -> bool:
        """Whether the store keeps sessions per owner (``owners=True``)."""
        return self._core.owners

    @property
    def max_sessions_per_owner(self) -> int | None:
        """The most live sessions one owner keeps, or None for no cap."""
        return self._core.max_sessions_per_owner

    @property
    def hash_tokens(self) -> bool:
        """Whether the store keeps only the hash of each token (``hash_tokens=True``)."""
        return self._core.hash_tokens

    @property
    def distributed(self) -> bool | None:
        """Whether Citus distributes the table; None until the store has asked (or been told)."""
        return self._core.distributed

    @property
    def cleanup(self) -> AsyncCleanupStrategy:
        """The cleanup strategy (its ``stats`` tell what it has done)."""
        return self._cleanup

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # async-only: begin
    async def open(self) -> None:
        """Start the cleanup task on the running loop; idempotent.

        Raises:
            RuntimeError: If the strategy already serves another store.
        """
        if not self._opened:
            self._opened = True
            self._cleanup.start(self)

    # async-only: end
    async def find(self, token: str) -> bytes | None:
        """Return a live session's data (``b""`` if empty), or None if missing or expired."""
        return await self._finds.submit(self._core.find(token))

    async def commit(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        *,
        owner: str | None = None,
    ) -> None:
        """Save a session, replacing any with the same token (last writer wins).

        `owner` (needs ``owners=True``) is who the session belongs to, e.g. a user id; None
        keeps the row's current owner. With `max_sessions_per_owner`, the owner's other
        sessions beyond the cap are deleted.
        """
        if self._core.distributed is None and self._core.capped(owner):
            await self._learn_distribution()  # a capped write takes another form on Citus
        await self._commits.submit(self._core.commit(token, data, expiry, owner))

    async def touch(self, token: str, expiry: dt.datetime) -> bool:
        """Move a live session's expiry without rewriting its data; whether it was live.

        False means nothing was written: a missing or expired session is never brought back.
        """
        return await self._touches.submit(self._core.touch(token, expiry))

    async def find_versioned(self, token: str) -> Versioned | None:
        """Return a live session's data, version and expiry, for `update_versioned`; else None."""
        return await self._versioned_finds.submit(self._core.find_versioned(token))

    async def update_versioned(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        version: int,
        *,
        owner: str | None = None,
    ) -> bool:
        """Rewrite a live session only if nothing wrote it since it was read at `version`.

        Optimistic concurrency: read with `find_versioned`, change, write with this, giving
        the `Versioned.version` read. `owner` as for `commit`.

        Returns:
            True if the session was live at `version` and is rewritten; False, with nothing
                written, if it changed, expired or is gone: read it again and decide.
        """
        statement = self._core.update_versioned(token, data, expiry, version, owner)
        return await self._versioned_updates.submit(statement)

    async def create(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        *,
        owner: str | None = None,
    ) -> bool:
        """Save a new session, unless a live session has the token; whether it was created.

        An expired session with the token counts as free and is replaced. False changes
        nothing; for a token just generated it is a collision: pick another. `owner` as for
        `commit`.
        """
        await self._learn_distribution()  # its form on Citus differs
        statement = self._core.create(token, data, expiry, owner)
        return bool(await self._query("create", statement, "count"))

    async def update(
        self,
        token: str,
        data: bytes | bytearray | memoryview,
        expiry: dt.datetime,
        *,
        owner: str | None = None,
    ) -> bool:
        """Rewrite a live session's data and expiry, never reviving one; whether it was live.

        The counterpart of `create`: a session deleted meanwhile (logged out elsewhere,
        expired, purged) stays deleted, e.g. for Django's ``UpdateError``. `owner` as for
        `commit`.
        """
        statement = self._core.update(token, data, expiry, owner)
        return bool(await self._query("update", statement, "count"))

    async def rotate(self, token: str, *, grace: dt.timedelta, prefix: str = "") -> str | None:
        """Move a live session to a new token; the old one lives on for at most `grace`.

        The new token is `prefix` and 43 random characters (256 bits, never derived from the
        old one); its session has the old one's data, expiry and owner. The old token's
        expiry becomes the earlier of its own and now + `grace` (``timedelta(0)`` ends it at
        once). Of concurrent rotations of a token one wins and the others get None. A session
        with no more than `grace` left counts as rotated, so it is not rotated again
        (docs/users.md#a-cap-per-user-and-token-rotation).

        Returns:
            The new token, or None, with nothing changed, if the old token names no live
                session with more than `grace` left.

        Raises:
            ConcurrentUpdateError: With ``encryption``, if the session was written 16 times
                while it was being rotated.
        """
        steps = self._core.rotate_steps(token, grace, prefix)
        await self._learn_distribution()  # its form on Citus differs
        with measure(self._metrics, "rotate"):
            # Not `_query`: running it again after a lost reply could find the first
            # run's work and answer None, and lose the new token.
            new: str | None = await self._steps("rotate", steps, hint=self._core.failure_hint)
            return new

    async def delete(self, token: str) -> None:
        """Delete a session; a missing token is not an error."""
        await self._query("delete", self._core.delete(token), "none")

    async def exists(self, token: str) -> bool:
        """Return whether a live session has the token."""
        return await self._query("exists", self._core.expiry(token), "one") is not None

    async def expiry(self, token: str) -> dt.datetime | None:
        """Return when a live session expires (aware, in UTC), or None if missing or expired."""
        row = await self._query("expiry", self._core.expiry(token), "one")
        return self._core.decode_expiry(row)

    async def all(self) -> dict[str, bytes]:
        """Return a new dict of every live session's token and data (``{}`` if none).

        With ``hash_tokens=True`` the keys are the stored hashes.
        """
        return self._core.decode_all(await self._query("all", self._core.all(), "all"))

    @contextlib.asynccontextmanager
    async def iter_all(
        self, *, batch_size: int = 1000
    ) -> AsyncIterator[AsyncIterator[tuple[str, bytes]]]:
        """Walk every live session without loading them all: a server-side cursor.

        Rows arrive `batch_size` at a time. The cursor holds a pooled connection (in one
        transaction, so it sees one snapshot) until the ``async with`` block ends; a
        database failure, also while iterating, raises `DatabaseError`::

            async with store.iter_all() as sessions:
                async for token, data in sessions:
                    ...

        Yields:
            An iterator of (token, data) pairs (token hashes with ``hash_tokens``).
        """
        validate_batch_size(batch_size)
        statement = self._core.all()
        async with (
            self._borrowed("iter_all") as conn,
            conn.transaction(),
            conn.cursor("sessionstore_iter_all", binary=True, row_factory=tuple_row) as cursor,
        ):
            cursor.itersize = batch_size
            await cursor.execute(statement.query)
            # Rows that do not decrypt are left out, as `all` leaves them out.
            opened = ((key, self._core.decode_data(key, data)) async for key, data in cursor)
            yield ((key, data) async for key, data in opened if data is not None)

    async def set_owner(self, token: str, owner: str | None) -> bool:
        """Set the owner of a live session, or clear it with None; whether it was live.

        With `max_sessions_per_owner`, the owner's other sessions beyond the cap are deleted.
        """
        if self._core.distributed is None and self._core.capped(owner):
            await self._learn_distribution()  # as in `commit`
        return bool(await self._query("set_owner", self._core.set_owner(token, owner), "count"))

    async def sessions_of(self, owner: str) -> list[OwnedSession]:
        """List an owner's live sessions ("where you are logged in"), soonest to expire first.

        Each `OwnedSession.key` is the stored key (the token's hash with ``hash_tokens``),
        for `revoke`.
        """
        rows = await self._query("sessions_of", self._core.sessions_of(owner), "all")
        return self._core.decode_owned(rows)

    async def delete_owned(self, owner: str, *, keep: str | None = None) -> int:
        """Delete every session of an owner ("log out everywhere"); return how many.

        `keep` is the caller's own raw token, to stay logged in here. The count includes the
        owner's expired sessions.
        """
        return int(await self._query("delete_owned", self._core.delete_owned(owner, keep), "count"))

    async def revoke(self, owner: str, key: str) -> bool:
        """Delete an owner's session by its `sessions_of` key; whether it was theirs and is gone.

        Only a session that belongs to `owner` is deleted, so a key from one user's list
        can't end another user's session.
        """
        return bool(await self._query("revoke", self._core.revoke(owner, key), "count"))

    async def purge_expired(self, *, batch_size: int | None = None) -> int:
        """Delete every expired session now, in batches; return how many.

        `batch_size` is the most one statement deletes (default: `purge_batch_size`). If
        another store (in this or any process) is purging the table at this moment, this
        returns 0 at once: that purge deletes them (docs/cleanup.md#how-a-purge-runs).
        """
        return await self.try_purge_expired(batch_size=batch_size) or 0

    async def try_purge_expired(
        self, *, batch_size: int | None = None, cancel: Cancellation | None = None
    ) -> int | None:
        """Purge like `purge_expired`, unless another purge of the table is running.

        What the cleanup strategies call. Cancelling `cancel` stops the purge between
        batches and cancels its running statement on the server.

        Returns:
            How many sessions were deleted, or None if another purge was running when this
                one began (0 if `cancel` was cancelled before it began).

        Raises:
            DatabaseError: If the database failed, or the purge was cancelled while a
                statement ran.
        """
        should_stop = (lambda: False) if cancel is None else (lambda: cancel.cancelled)
        steps = self._core.purge_steps(batch_size, should_stop)
        await self._learn_distribution()
        with measure(self._metrics, "purge") as measured:
            # measured.steps counts the purge's statements (when measured).
            deleted: int | None = await self._steps("purge_expired", measured.steps(steps), cancel)
            measured.purged(deleted)
            return deleted

    async def clear(self, *, batch_size: int | None = None) -> int:
        """Delete every session in the table, live or expired, in batches; return how many.

        Each batch is one short statement that never waits for a row lock (a row a
        concurrent commit holds is left to that commit). The role needs no rights beyond
        SELECT, UPDATE and DELETE. `batch_size` as for `purge_expired`.
        """
        steps = self._core.clear_steps(batch_size)
        await self._learn_distribution()
        with measure(self._metrics, "clear"):
            return int(await self._steps("clear", steps))

    async def delete_prefix(self, prefix: str, *, batch_size: int | None = None) -> int:
        """Delete every session whose key starts with `prefix`, live or expired; return how many.

        For keys that carry a namespace (``"app:sessions:..."``), as a key-value store built
        on the table keeps them. Batched like `clear`, and like it never waits for a row lock.

        Raises:
            ValueError: Also if the store has ``hash_tokens=True`` (a hashed key keeps no
                prefix).
        """
        steps = self._core.delete_prefix_steps(prefix, batch_size)
        await self._learn_distribution()
        return int(await self._steps("delete_prefix", steps))

    async def reencrypt(self, *, batch_size: int | None = None) -> int:
        """Rewrite every live session that is not under the keyring's first key; return how many.

        The step of a key rotation that follows putting the new key first in every process's
        `Keyring` (docs/encryption.md#rotating-keys). Batched like `clear`; a session written
        since its batch read it is left alone (that write wins), and one that does not
        decrypt is left as it is, with a warning.

        Raises:
            ValueError: Also if the store was made without ``encryption``.
        """
        steps = self._core.reencrypt_steps(batch_size)
        with measure(self._metrics, "reencrypt"):
            return int(await self._steps("reencrypt", steps))

    async def create_table(self) -> bool:
        """Create the schema, table and index if missing; whether anything was created.

        Never called implicitly. Idempotent, and safe when several processes run it at once.
        On an existing table it only reads the catalog, so it needs no DDL rights. With
        ``owners=True`` it adds the owner column to an existing table (a catalog change, no
        rewrite) and builds its index without blocking writes.
        """
        steps = create_table_steps(self._core)
        with measure(self._metrics, "create_table"):
            created, index_pending = await self._run("create_table", steps, create_table_hint)
            if index_pending:
                await self._build_owner_index()
        return bool(created)

    async def stop_cleanup(self) -> None:
        """Stop the cleanup worker and wait for it (within its bound).

        Idempotent and safe from any thread or task; the store's other methods go on working.
        """
        # sync-only: self._starter.stop()
        await self._cleanup.astop()

    async def aclose(self) -> None:
        """Stop the cleanup worker. The pool stays open: it is the caller's."""
        await self.stop_cleanup()

    async def __aenter__(self) -> AsyncStore:
        # async-only: begin
        await self.open()
        # async-only: end
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Private: the only places that borrow connections.

    def _connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """Borrow a pooled connection (the sync store's first starts its cleanup)."""
        # sync-only: if self._starter.due:
        # sync-only:     self._starter.start()
        return self._pool.connection()

    @contextlib.asynccontextmanager
    async def _borrowed(
        self, operation: str, hint: Callable[[psycopg.Error], str] = _no_hint
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection, in whose block a psycopg error raises `DatabaseError`."""
        try:
            async with self._connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise DatabaseError(operation, exc, hint(exc)) from exc

    def _after_fork_in_child(self, stand_in: Any) -> None:
        """In a forked child, make every use raise `ForkedProcessError` (see `_fork`)."""
        # A pool not open at the fork holds nothing of the parent's: the child may open
        # it (``gunicorn --preload`` makes the store in the master, the pool per worker).
        if not self._pool.closed:
            self._pool = stand_in
        self._start_batchers()  # a parent thread may have held a batcher's lock

    def _start_batchers(self) -> None:
        core = self._core
        self._depth = Depth()  # one for every operation: one path to the server
        self._finds = self._batcher("find", "one", core.decode_find)
        self._commits = self._batcher("commit", "none", core.decode_nothing)
        self._touches = self._batcher("touch", "count", core.decode_written)
        self._versioned_finds = self._batcher("find_versioned", "one", core.decode_versioned)
        self._versioned_updates = self._batcher("update_versioned", "count", core.decode_written)
        self._set_combining()

    def _batcher(
        self, operation: str, fetch: Fetch, decode: Callable[[Statement, Any], T]
    ) -> AsyncBatcher[T]:
        """Calls of `operation`: one alone, as `decode` reads it, or combined by the core."""

        async def single(statement: Statement) -> T:
            return decode(statement, await self._query(operation, statement, fetch))

        async def combined(statements: Sequence[Statement]) -> list[T]:
            await self._learn_distribution()  # the batch may have been taken before the answer
            if self._core.distributed:  # not combined on Citus: each runs alone
                # async-only: begin
                return list(await asyncio.gather(*map(single, statements)))
                # async-only: end
                # sync-only: return [single(statement) for statement in statements]
            if self._metrics is not None:
                self._metrics.batch(operation, len(statements))
            statement = getattr(self._core, f"{operation}_many")(statements)
            rows = await self._query(operation, statement, "none" if fetch == "none" else "all")
            decoded: list[T] = getattr(self._core, f"decode_{operation}_many")(statements, rows)
            return decoded

        return AsyncBatcher(
            operation,
            single,
            combined,
            SessionCore.payload_size,
            lambda: max(1, self._pool.max_size),  # the most statements at once
            lambda: float(self._pool.timeout),  # the longest wait for a connection
            self._depth,
        )

    def _set_combining(self) -> None:
        """Combine concurrent calls, unless Citus distributes the table (docs/scaling.md#citus)."""
        for batcher in (
            self._finds,
            self._commits,
            self._touches,
            self._versioned_finds,
            self._versioned_updates,
        ):
            batcher.combine = not self._core.distributed

    async def _learn_distribution(self) -> None:
        """Ask the catalogs whether Citus distributes the table, unless known."""
        if self._core.distributed is None:
            distributed = await self._run("detect", self._core.detect_steps())
            if distributed is not None:  # None: no table yet; ask again next time
                self._core.use_distributed(distributed)
                self._set_combining()

    async def _query(self, operation: str, statement: Statement, fetch: Fetch) -> Any:
        """Run one statement on a pooled connection; again if it broke (docs/usage.md#retries)."""
        retries = 0
        while True:
            conn = None
            try:
                async with self._connection() as conn:
                    if not conn.autocommit and not self._told_autocommit:
                        self._told_autocommit = True
                        logger.warning(NOT_AUTOCOMMIT, self._pool.name)
                    if statement.lock is not None:
                        return await self._locked(conn, statement, fetch)
                    if direct(conn):  # on libpq, without a cursor: see `_wire`
                        async with conn.lock:
                            return await conn.wait(run(conn, statement, fetch))
                    # psycopg's public path: prepared at first use (unless the
                    # connection's prepare_threshold is None, which psycopg honours).
                    cursor = conn.cursor(binary=binary_results(conn), row_factory=tuple_row)
                    await cursor.execute(statement.query, statement.params, prepare=True)
                    return await _fetched(cursor, fetch)
            except psycopg.Error as exc:
                if retries >= max(MIN_RETRIES, self._pool.max_size) or not should_retry(exc, conn):
                    raise DatabaseError(operation, exc, self._core.failure_hint(exc)) from exc
                retries += 1
                if self._metrics is not None:
                    self._metrics.retry(operation)
                logger.warning("%s: connection lost (%s), retrying", operation, type(exc).__name__)
                await self._pool.check()  # drop the other dead connections first

    async def _locked(
        self, conn: psycopg.AsyncConnection[Any], statement: Statement, fetch: Fetch
    ) -> Any:
        """Run `statement.lock`, then `statement`, in one transaction and one round trip."""
        if statement.trim is not None:  # a capped write on Citus: `SessionCore.capped_steps`
            async with conn.transaction():
                steps = self._core.capped_steps(statement)
                written = await self._drive(conn, steps, commit_each=False)
            return written if fetch == "count" else None
        lock = statement.lock
        assert lock is not None
        # A pipeline sends BEGIN, both statements and COMMIT at once (one round trip, where
        # `conn.transaction()` waits for each); outside autocommit, psycopg sends the BEGIN.
        try:
            async with conn.pipeline():
                if conn.autocommit:
                    await conn.execute(b"BEGIN")
                await conn.execute(lock.query, lock.params, prepare=True)
                cursor = conn.cursor(binary=binary_results(conn), row_factory=tuple_row)
                await cursor.execute(statement.query, statement.params, prepare=True)
                await conn.execute(b"COMMIT")
        except psycopg.Error:
            # A failed statement leaves the transaction aborted (the COMMIT behind it
            # never ran): end it here rather than hand it back to the pool so.
            if not conn.broken:
                await conn.rollback()
            raise
        return await _fetched(cursor, fetch)

    async def _timed_query(self, operation: str, statement: Statement, fetch: Fetch) -> Any:
        """`_query`, timed for the store's recorder (it replaces `_query` when there is one)."""
        with measure(self._metrics, operation):
            return await AsyncStore._query(self, operation, statement, fetch)

    async def _steps(
        self,
        operation: str,
        steps: Steps,
        cancel: Cancellation | None = None,
        hint: Callable[[psycopg.Error], str] = _no_hint,
    ) -> Any:
        """Drive batched deletes or rewrites, or a rotation (see `_drive_steps`)."""
        async with self._borrowed(operation, hint) as conn:
            with cancelling(cancel, conn.cancel):
                return await self._drive_steps(conn, steps)

    async def _run(
        self, operation: str, steps: Steps, hint: Callable[[psycopg.Error], str] = _no_hint
    ) -> Any:
        """Drive a multi-statement core generator inside one transaction."""
        async with self._borrowed(operation, hint) as conn, conn.transaction():
            return await self._drive(conn, steps, commit_each=False)

    async def _build_owner_index(self) -> None:
        """Build the owner index CONCURRENTLY, hence on an autocommit connection."""
        for attempt in (1, 2):
            try:
                async with self._borrowed("create_table", create_table_hint) as conn:
                    autocommit = conn.autocommit
                    await conn.set_autocommit(True)
                    try:
                        await self._drive(conn, owner_index_steps(self._core), commit_each=False)
                        return
                    finally:
                        await conn.set_autocommit(autocommit)
            except DatabaseError as exc:
                # Two builds at once deadlock; the one cancelled finds the index next time
                # (docs/users.md#adding-the-column).
                if exc.sqlstate != "40P01" or attempt == 2:
                    raise

    async def _drive_steps(self, conn: psycopg.AsyncConnection[Any], steps: Steps) -> Any:
        """Drive batched deletes or a rotation: a transaction per statement; on Citus, one."""
        if self._core.distributed:  # e.g. the lock and the DELETE (see `SessionCore`)
            async with conn.transaction():
                return await self._drive(conn, steps, commit_each=False)
        return await self._drive(conn, steps, commit_each=True)

    async def _drive(
        self, conn: psycopg.AsyncConnection[Any], steps: Steps, *, commit_each: bool
    ) -> Any:
        """Execute what a core generator yields, send back the results, return its value."""
        result: Result | None = None
        while True:
            try:
                # Starting the generator is inside the try too: one that ends at
                # once (a purge cancelled before it began) returns its value.
                statement = next(steps) if result is None else steps.send(result)
            except StopIteration as done:
                return done.value
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(statement.query, statement.params)
            rows = await cursor.fetchall() if cursor.description else []
            if commit_each and not conn.autocommit:
                await conn.commit()
            result = Result(rows, cursor.rowcount)


async def _fetched(cursor: psycopg.AsyncCursor[Any], fetch: Fetch) -> Any:
    """What `fetch` asks of an executed cursor (see `Fetch`)."""
    if fetch == "one":
        return await cursor.fetchone()
    if fetch == "all":
        return await cursor.fetchall()
    if fetch == "count":
        return cursor.rowcount
    return None
