"""The contenders: the two stores (plain and encrypting), the plain psycopg pattern, pgbench."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store, _wire
from sessionstore.cleanup import NoCleanup
from sessionstore.crypto import Keyring

from . import measure
from .measure import Inputs, Run, Sample
from .workload import Table

#: The largest pool a measurement uses: one connection per caller, at most 16 (callers
#: beyond that share them, as an app's do). docs/performance.md's figures use this.
POOL_MAX = 16

#: How long to wait for a pool to fill before giving up.
POOL_OPEN_TIMEOUT = 30.0

Kind = Literal["thread", "asyncio", "pgbench"]

#: The encrypting contenders' key (a benchmark's secret needs no secrecy).
KEYRING = Keyring(bytes(range(32)))


@dataclasses.dataclass(frozen=True)
class Contender:
    """One way of running the workload."""

    key: str
    label: str
    kind: Kind
    autocommit: bool = True
    store: bool = False
    wire: bool = True
    #: Encrypts with `KEYRING`, on rows of its own (`Bench.setup` preloads them).
    encrypted: bool = False

    @property
    def baseline(self) -> str | None:
        """The raw autocommit contender of the same kind, which ratios are taken to."""
        return {"thread": "raw_sync", "asyncio": "raw_async"}.get(self.kind)


CONTENDERS: tuple[Contender, ...] = (
    Contender("store", "Store (threads)", "thread", store=True),
    Contender("async_store", "AsyncStore (asyncio)", "asyncio", store=True),
    Contender("store_public", "Store, psycopg's public path", "thread", store=True, wire=False),
    Contender(
        "async_store_public", "AsyncStore, psycopg's public path", "asyncio", store=True, wire=False
    ),
    Contender("store_encrypted", "Store, encrypted", "thread", store=True, encrypted=True),
    Contender(
        "async_store_encrypted", "AsyncStore, encrypted", "asyncio", store=True, encrypted=True
    ),
    Contender("raw_sync", "raw psycopg sync, autocommit", "thread"),
    Contender("raw_async", "raw psycopg async, autocommit", "asyncio"),
    Contender("raw_sync_tx", "raw psycopg sync, default pool", "thread", autocommit=False),
    Contender("raw_async_tx", "raw psycopg async, default pool", "asyncio", autocommit=False),
    Contender("pgbench", "pgbench -M prepared", "pgbench"),
)

BY_KEY = {c.key: c for c in CONTENDERS}


def pool_size(concurrency: int) -> int:
    return max(1, min(concurrency, POOL_MAX))


class _Raw:
    """The plain pattern: borrow a connection, execute, fetch."""

    def __init__(self, pool: Any, table: Table) -> None:
        self._pool = pool
        self._find, self._commit, self._delete = table.find_sql, table.commit_sql, table.delete_sql


class RawSync(_Raw):
    def find(self, token: str) -> object:
        with self._pool.connection() as conn:
            return conn.execute(self._find, (token,)).fetchone()

    def commit(self, token: str, data: bytes, expiry: dt.datetime) -> None:
        with self._pool.connection() as conn:
            conn.execute(self._commit, (token, data, expiry))

    def delete(self, token: str) -> None:
        with self._pool.connection() as conn:
            conn.execute(self._delete, (token,))


class RawAsync(_Raw):
    async def find(self, token: str) -> object:
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._find, (token,))
            return await cur.fetchone()

    async def commit(self, token: str, data: bytes, expiry: dt.datetime) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(self._commit, (token, data, expiry))

    async def delete(self, token: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(self._delete, (token,))


def measure_python(contender: Contender, run: Run, inputs: Inputs) -> Sample:
    """Measure a threaded or asyncio contender: open its pool, run the workers, close it."""
    enabled = _wire.enabled
    _wire.enabled = contender.wire and _wire.AVAILABLE
    try:
        if contender.kind == "thread":
            return _measure_threads(contender, run, inputs)
        if contender.kind == "asyncio":
            return asyncio.run(_measure_tasks(contender, run, inputs))
        raise ValueError(f"{contender.key} is not a Python contender")
    finally:
        _wire.enabled = enabled


def _pool_options(contender: Contender, run: Run) -> dict[str, Any]:
    size = pool_size(run.concurrency)
    kwargs = {"autocommit": True} if contender.autocommit else {}
    return dict(
        min_size=size, max_size=size, kwargs=kwargs, open=False, name=f"bench-{contender.key}"
    )


def _store_options(run: Run, contender: Contender) -> dict[str, Any]:
    keyring = KEYRING if contender.encrypted else None
    return dict(table=run.table.name, cleanup=NoCleanup(), encryption=keyring)


def _counted(sample: Sample, run: Run, counter: Iterator[int], inputs: Inputs) -> Sample:
    """`sample` with the delete pool's rows it used."""
    if run.op == "delete":
        sample.consumed = min(next(counter), len(inputs.delete_tokens))
    return sample


def _measure_threads(contender: Contender, run: Run, inputs: Inputs) -> Sample:
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        run.dsn, **_pool_options(contender, run)
    )
    try:  # open inside: a Ctrl-C while connecting must still close the pool
        pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT)
        store = Store(pool, **_store_options(run, contender)) if contender.store else None
        try:
            counter = itertools.count()
            client = RawSync(pool, run.table) if store is None else store
            op = measure.op_call(run.op, client, inputs, counter)
            sample = measure.run_threads(op, run)
            return _counted(sample, run, counter, inputs)
        finally:
            if store is not None:
                store.close()
    finally:
        pool.close()


async def _measure_tasks(contender: Contender, run: Run, inputs: Inputs) -> Sample:
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        run.dsn, **_pool_options(contender, run)
    )
    try:  # open inside: a Ctrl-C while connecting must still close the pool
        await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT)
        store = AsyncStore(pool, **_store_options(run, contender)) if contender.store else None
        try:
            counter = itertools.count()
            client = RawAsync(pool, run.table) if store is None else store
            op = measure.op_call(run.op, client, inputs, counter)
            sample = await measure.run_tasks(op, run)
            return _counted(sample, run, counter, inputs)
        finally:
            if store is not None:
                await store.aclose()
    finally:
        await pool.close()
