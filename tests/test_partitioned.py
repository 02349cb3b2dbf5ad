"""Every operation on a hash-partitioned sessions table (``PARTITION BY HASH (token)``).

A partitioned table is how a large single server spreads the sessions; its physical
row addresses (``ctid``) repeat across partitions, so nothing may rely on them.
The DDL is the one docs/schema.md gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from _support import Both, in_, insert_expired, new_token
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore.cleanup import NoCleanup

PARTITIONS = 4
TABLE = "partitioned_sessions"


@pytest.fixture
def partitioned(db: psycopg.Connection[Any]) -> None:
    db.execute(
        f"CREATE TABLE {TABLE} (token TEXT PRIMARY KEY, data BYTEA NOT NULL, "
        "expiry TIMESTAMPTZ NOT NULL) PARTITION BY HASH (token)"
    )
    for n in range(PARTITIONS):
        db.execute(
            f"CREATE TABLE {TABLE}_{n} PARTITION OF {TABLE} "
            f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {n})"
        )
    db.execute(f"CREATE INDEX {TABLE}_expiry_idx ON {TABLE} (expiry)")


@pytest.fixture(params=["sync", "async"])
async def pstore(
    request: pytest.FixtureRequest, sessionstore_dsn: str, partitioned: None
) -> AsyncIterator[Both]:
    kwargs = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs) as pool:
            yield Both(Store(pool, table=TABLE, cleanup=NoCleanup()))
    else:
        async with AsyncConnectionPool(
            sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs
        ) as apool:
            yield Both(AsyncStore(apool, table=TABLE, cleanup=NoCleanup()))


def rows_per_partition(db: psycopg.Connection[Any], where: str = "true") -> list[int]:
    query = (
        f"SELECT count(*) FILTER (WHERE {where}) FROM {TABLE} "
        "GROUP BY tableoid ORDER BY tableoid::regclass::text"
    )
    return [row[0] for row in db.execute(query)]


async def test_find_commit_delete_all_on_a_partitioned_table(
    pstore: Both, db: psycopg.Connection[Any]
) -> None:
    sessions = {new_token(): b"data %d" % n for n in range(200)}
    for token, data in sessions.items():
        await pstore.commit(token, data, in_(600))
    counts = rows_per_partition(db)
    assert len(counts) == PARTITIONS
    assert min(counts) > 0  # spread over every partition
    for token, data in sessions.items():
        assert await pstore.find(token) == data
    assert await pstore.all() == sessions
    assert await pstore.walk(batch_size=7) == sessions
    token = next(iter(sessions))
    await pstore.commit(token, b"replaced", in_(600))  # the upsert finds the partition
    assert await pstore.find(token) == b"replaced"
    await pstore.delete(token)
    assert await pstore.find(token) is None
    assert db.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (199,)


@pytest.mark.parametrize("batch_size", [1, 13, 5000])
async def test_batched_purge_on_a_partitioned_table_is_exact(
    pstore: Both, db: psycopg.Connection[Any], batch_size: int
) -> None:
    """Every expired row goes, each counted once, and no live row is touched."""
    live = {new_token(): b"live %d" % n for n in range(300)}
    for token, data in live.items():
        await pstore.commit(token, data, in_(600))
    insert_expired(db, 1000, table=TABLE)
    # Rows at the same physical address in different partitions: one expired, one live.
    assert db.execute(
        f"SELECT count(*) FROM (SELECT ctid FROM {TABLE} GROUP BY ctid "
        "HAVING bool_or(expiry < now()) AND bool_or(expiry > now())) AS shared"
    ).fetchone() != (0,)
    before = db.execute(f"SELECT token, xmin::text FROM {TABLE} WHERE expiry > now()").fetchall()
    assert await pstore.purge_expired(batch_size=batch_size) == 1000
    assert rows_per_partition(db, "expiry < now()") == [0] * PARTITIONS
    # The live rows are the very same row versions: not deleted, not rewritten.
    after = db.execute(f"SELECT token, xmin::text FROM {TABLE}").fetchall()
    assert sorted(after) == sorted(before)
    assert await pstore.all() == live
    assert await pstore.purge_expired() == 0
