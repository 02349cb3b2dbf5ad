"""Every store operation on a Citus distributed table: a coordinator and two workers.

Selected only with ``pytest -m citus`` (the default run and CI leave it out). Citus is
not packaged anywhere here: build it from its source against the server's PostgreSQL
(docs/scaling.md#citus says how). Asked to run without it, the fixture fails, never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import secrets
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _support import Both, db_now, in_, new_token, table_rows
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from test_cap_rotate import GRACE, column, live_keys, replay, rotate_at_once
from test_cli import run

from sessionstore import AsyncStore, Store
from sessionstore._core import hash_token
from sessionstore.cleanup import NoCleanup, TaskCleanup, ThreadCleanup
from sessionstore.crypto import Keyring
from sessionstore.schema import ddl
from sessionstore.testing import PostgresServer, ephemeral_postgres, find_postgres_bindir

pytestmark = pytest.mark.citus

#: What each node runs with: Citus loaded; no TLS between nodes on loopback (the
#: server runs as another account, which can't read this user's ~/.postgresql);
#: no reports to Citus's servers; a few shards, so distributing a table is quick.
SETTINGS = {
    "shared_preload_libraries": "citus",
    "citus.node_conninfo": "sslmode=disable",
    "citus.enable_statistics_collection": "off",
    "citus.shard_count": "8",
    "max_connections": "300",
}

#: A log of the inserts into a distributed table, kept on each worker (`audited`):
#: {0} names the log, its function and its trigger, {1} the table.
AUDIT = (
    "CREATE TABLE {0} (at timestamptz, token text, expiry timestamptz)",
    "CREATE FUNCTION {0}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO {0} VALUES (clock_timestamp(), NEW.token, NEW.expiry); "
    "PERFORM pg_sleep(0.005); RETURN NULL; END $$",
    "CREATE TRIGGER {0} AFTER INSERT ON {1} FOR EACH ROW EXECUTE FUNCTION {0}()",
)

HOW_TO_BUILD = """\
Citus is not installed in {pkglibdir} (no citus.so), and `pytest -m citus` needs it.
Build Citus 13.2.2 (the newest for PostgreSQL 15) from its source, by hand, outside this
repository:
  git clone --branch v13.2.2 https://github.com/citusdata/citus && cd citus
  # the server's headers: apt-get install postgresql-server-dev-15 (or extract its .deb
  # with `apt-get download` + `dpkg-deb -x` and pass includedir_server=... to make)
  apt-get install libcurl4-openssl-dev liblz4-dev libzstd-dev libssl-dev libkrb5-dev
  PG_CONFIG={pg_config} ./configure && make -j2 with_llvm=no && make install with_llvm=no
See docs/scaling.md#citus."""


def _pkglibdir(bindir: Path) -> tuple[Path, str]:
    pg_config = bindir / "pg_config"
    program = str(pg_config) if pg_config.exists() else "pg_config"
    out = subprocess.run([program, "--pkglibdir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()), program


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[PostgresServer]]:
    """A coordinator and two workers (metadata on every node: any of them takes queries)."""
    bindir, _ = find_postgres_bindir()
    pkglibdir, pg_config = _pkglibdir(bindir)
    if not (pkglibdir / "citus.so").exists():
        pytest.fail(HOW_TO_BUILD.format(pkglibdir=pkglibdir, pg_config=pg_config), pytrace=False)
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(ephemeral_postgres(env_var=None, settings=SETTINGS, bindir=bindir))
            for _ in range(3)
        ]
        for node in nodes:
            with psycopg.connect(node.dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION citus")
        coordinator = nodes[0]
        with psycopg.connect(coordinator.dsn, autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (coordinator.port,))
            for worker in nodes[1:]:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (worker.port,))
        yield nodes


@pytest.fixture
def dsn(cluster: list[PostgresServer]) -> str:
    return cluster[0].dsn


@pytest.fixture
def table(dsn: str) -> Iterator[str]:
    """A fresh sessions table (with the owner column), distributed by token."""
    name = "s_" + secrets.token_hex(4)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl(name, owners=True).encode())
        conn.execute("SELECT create_distributed_table(%s, 'token')", (name,))
        yield name
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(params=["sync", "async"])
async def make(request: pytest.FixtureRequest, dsn: str, table: str) -> AsyncIterator[Any]:
    """``make(**options)``: a `Both` over a store on the test's distributed table."""
    kwargs = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(dsn, min_size=1, max_size=8, kwargs=kwargs) as pool:
            yield lambda **o: Both(
                Store(pool, table=table, cleanup=o.pop("cleanup", NoCleanup()), **o)
            )
    else:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=8, kwargs=kwargs) as apool:
            yield lambda **o: Both(
                AsyncStore(apool, table=table, cleanup=o.pop("cleanup", NoCleanup()), **o)
            )


def count(db: psycopg.Connection[Any], table: str, where: str = "true") -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE " + where).format(sql.Identifier(table))
    row = db.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def insert_expired(db: psycopg.Connection[Any], table: str, n: int, prefix: str = "old-") -> None:
    db.execute(
        sql.SQL(
            "INSERT INTO {} (token, data, expiry) SELECT %s || i, '\\x00', "
            "now() - i * interval '1 s' FROM generate_series(1, %s) AS i"
        ).format(sql.Identifier(table)),
        (prefix, n),
    )


@pytest.mark.parametrize("hash_tokens", [False, True])
async def test_every_operation_on_a_distributed_table(make: Any, hash_tokens: bool) -> None:
    store: Both = make(hash_tokens=hash_tokens)
    token, other = new_token(), new_token()
    await store.commit(token, b"one", in_(60))
    assert store.store.distributed is None  # a single commit is the same SQL everywhere
    assert await store.find(token) == b"one"
    assert await store.exists(token) is True
    assert (await store.expiry(token)) is not None
    assert await store.touch(token, in_(120)) is True
    assert await store.update(token, b"two", in_(120)) is True
    assert await store.update(other, b"x", in_(60)) is False
    versioned = await store.find_versioned(token)
    assert versioned is not None
    assert versioned.data == b"two"
    assert await store.update_versioned(token, b"three", in_(60), versioned.version) is True
    assert await store.update_versioned(token, b"four", in_(60), versioned.version) is False
    assert await store.find(token) == b"three"

    # create: a new token, a live collision, an expired row taken over.
    assert await store.create(other, b"new", in_(60)) is True
    assert store.store.distributed is True  # asked before the first create
    assert await store.create(other, b"again", in_(60)) is False
    assert await store.find(other) == b"new"
    await store.commit(other, b"stale", in_(-5))
    assert await store.create(other, b"fresh", in_(60)) is True
    assert await store.find(other) == b"fresh"

    everything = await store.all()
    assert len(everything) == 2
    assert await store.walk(batch_size=1) == everything
    await store.delete(token)
    assert await store.find(token) is None
    await store.commit(token, b"gone", in_(-1))
    assert await store.purge_expired() == 1
    assert await store.try_purge_expired() == 0
    assert await store.clear() == 1
    assert await store.all() == {}


async def test_owners_on_a_distributed_table(make: Any) -> None:
    store: Both = make(owners=True, hash_tokens=True)
    a, b, c = new_token(), new_token(), new_token()
    await store.commit(a, b"a", in_(60), owner="alice")
    assert await store.create(b, b"b", in_(90), owner="alice") is True
    await store.commit(c, b"c", in_(60))
    assert await store.set_owner(c, "bob") is True
    listed = await store.sessions_of("alice")
    assert [s.data for s in listed] == [b"a", b"b"]
    assert await store.revoke("alice", listed[0].key) is True
    assert await store.delete_owned("alice", keep=None) == 1
    assert [s.data for s in await store.sessions_of("bob")] == [b"c"]


async def test_delete_prefix_on_a_distributed_table(make: Any) -> None:
    store: Both = make()
    for i in range(20):
        await store.commit(f"app:{i}", b"x", in_(60))
        await store.commit(f"web:{i}", b"x", in_(-60 if i % 2 else 60))
    if isinstance(store.store, AsyncStore):
        assert await store.store.delete_prefix("app:") == 20
    else:
        assert store.store.delete_prefix("app:") == 20
    assert sorted(await store.all()) == sorted(f"web:{i}" for i in range(0, 20, 2))


async def test_concurrent_calls_are_right_and_not_combined_across_shards(make: Any) -> None:
    store: Both = make()
    tokens = [new_token() for _ in range(200)]
    assert await store.create(tokens[0], b"first", in_(60)) is True  # the store asks here
    assert store.store.distributed is True
    batchers = [store.store._finds, store.store._commits, store.store._touches]
    assert [batcher.combine for batcher in batchers] == [False, False, False]

    if isinstance(store.store, AsyncStore):
        s = store.store

        async def one(t: str) -> bytes | None:
            await s.commit(t, t.encode(), in_(60))
            return await s.find(t)

        found = await asyncio.gather(*(one(t) for t in tokens))
    else:
        sync = store.store
        found = []
        lock = threading.Lock()

        def work(chunk: list[str]) -> None:
            for t in chunk:
                sync.commit(t, t.encode(), in_(60))
                got = sync.find(t)
                with lock:
                    found.append(got)

        threads = [threading.Thread(target=work, args=(tokens[i::16],)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(f for f in found if f is not None) == sorted(t.encode() for t in tokens)
    assert len(await store.all()) == 200


async def test_rotate_on_a_distributed_table(
    make: Any, db: psycopg.Connection[Any], table: str
) -> None:
    for hashed in (False, True):
        store: Both = make(owners=True, hash_tokens=hashed)
        key = hash_token if hashed else str
        old, expiry = "ns:" + new_token(), in_(3600)
        await store.commit(old, b"data", expiry, owner="alice")
        before = db_now(db)
        new = await store.rotate(old, grace=GRACE, prefix="ns:")
        after = db_now(db)
        assert store.store.distributed is True  # asked before the first rotation
        assert new is not None
        assert new.startswith("ns:")
        assert await store.find(new) == b"data"
        assert await store.expiry(new) == expiry
        assert column(db, "owner", key(new), table) == "alice"
        assert await store.find(old) == b"data"  # still live, for the grace
        assert before + GRACE <= column(db, "expiry", key(old), table) <= after + GRACE
        assert await store.rotate(old, grace=GRACE) is None  # rotated already

        newest = await store.rotate(new, grace=dt.timedelta(0))
        assert newest is not None
        assert await store.find(new) is None
        assert await store.find(newest) == b"data"

        expired, short = new_token(), new_token()
        await store.commit(expired, b"", in_(-1))
        await store.commit(short, b"", in_(30))  # no more than the grace left
        rows = table_rows(db, table)
        for token in (new_token(), expired, short):
            assert await store.rotate(token, grace=GRACE) is None
        assert table_rows(db, table) == rows
        await store.clear()


async def test_rotate_encrypted_on_a_distributed_table(
    make: Any, db: psycopg.Connection[Any], table: str
) -> None:
    store: Both = make(owners=True, encryption=Keyring(Keyring.generate_key()))
    old = new_token()
    await store.commit(old, b"the cart", in_(600), owner="alice")
    new = await store.rotate(old, grace=GRACE)
    assert new is not None
    assert await store.find(new) == b"the cart"
    assert await store.find(old) == b"the cart"  # during the grace
    sealed = [bytes(column(db, "data", token, table)) for token in (old, new)]
    assert sealed[0] != sealed[1]  # each sealed for its own row
    assert b"the cart" not in sealed[1]
    assert await store.rotate(old, grace=GRACE) is None  # rotated already
    assert [s.data for s in await store.sessions_of("alice")] == [b"the cart"] * 2


@pytest.mark.parametrize("encrypted", [False, True])
async def test_concurrent_rotations_of_one_token_make_one_successor(
    make: Any, db: psycopg.Connection[Any], table: str, encrypted: bool
) -> None:
    options = {"encryption": Keyring(Keyring.generate_key())} if encrypted else {}
    await rotate_at_once(make(**options), db, table)


async def test_the_cap_on_a_distributed_table(
    make: Any, db: psycopg.Connection[Any], table: str
) -> None:
    store: Both = make(owners=True, max_sessions_per_owner=3)
    tokens = [new_token() for _ in range(5)]
    for n, token in enumerate(tokens):
        await store.commit(token, b"%d" % n, in_(600 + n), owner="alice")
        assert token in live_keys(db, "alice", table)
        assert len(live_keys(db, "alice", table)) == min(n + 1, 3)
    assert store.store.distributed is True  # asked before the first capped write
    assert live_keys(db, "alice", table) == set(tokens[2:])
    assert await store.find(tokens[0]) is None

    # The session just written stays, though it expires soonest.
    written = new_token()
    await store.commit(written, b"", in_(60), owner="alice")
    assert live_keys(db, "alice", table) == {*tokens[3:], written}

    # create and set_owner trim too; other owners are untouched.
    bob = new_token()
    await store.commit(bob, b"", in_(600), owner="bob")
    created, anonymous = new_token(), new_token()
    assert await store.create(created, b"", in_(900), owner="alice") is True
    assert live_keys(db, "alice", table) == {*tokens[3:], created}
    await store.commit(anonymous, b"", in_(900))
    assert await store.set_owner(anonymous, "alice") is True
    assert live_keys(db, "alice", table) == {tokens[4], created, anonymous}
    assert live_keys(db, "bob", table) == {bob}

    # A write that gives no owner, or writes nothing, trims nothing.
    await store.commit(tokens[4], b"again", in_(600))
    await store.commit(new_token(), b"", in_(600))
    assert await store.update(tokens[4], b"again", in_(600)) is True
    assert await store.set_owner(new_token(), "alice") is False  # no live session
    assert await store.create(created, b"", in_(600), owner="alice") is False  # taken
    assert live_keys(db, "alice", table) == {tokens[4], created, anonymous}


async def test_the_cap_with_hashed_tokens_on_a_distributed_table(
    make: Any, db: psycopg.Connection[Any], table: str
) -> None:
    store: Both = make(owners=True, max_sessions_per_owner=2, hash_tokens=True)
    tokens = [new_token() for _ in range(4)]
    for n, token in enumerate(tokens):
        await store.create(token, b"", in_(600 + n), owner="alice")
    assert live_keys(db, "alice", table) == {hash_token(token) for token in tokens[2:]}
    assert [await store.find(token) for token in tokens] == [None, None, b"", b""]


@contextlib.contextmanager
def audited(
    cluster: list[PostgresServer], db: psycopg.Connection[Any], table: str
) -> Iterator[Callable[[], list[tuple[str, dt.datetime]]]]:
    """Log every insert into `table`, on its shard's worker; yield what reads the log, in order.

    The log holds when each insert happened (the nodes share this machine's clock), and
    each insert sleeps a little, as a slow disk would, so concurrent writes overlap.
    """
    log = sql.Identifier("a_" + secrets.token_hex(4))
    for worker in cluster[1:]:
        with psycopg.connect(worker.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL(AUDIT[0]).format(log))
    db.execute("SET citus.enable_unsafe_triggers TO on")
    for statement in AUDIT[1:]:
        db.execute(sql.SQL(statement).format(log, sql.Identifier(table)))

    def read() -> list[tuple[str, dt.datetime]]:
        rows = []
        for worker in cluster[1:]:
            with psycopg.connect(worker.dsn, autocommit=True) as conn:
                rows += conn.execute(sql.SQL("SELECT * FROM {}").format(log)).fetchall()
        return [(token, expiry) for _, token, expiry in sorted(rows)]

    try:
        yield read
    finally:
        for worker in cluster[1:]:
            with psycopg.connect(worker.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(log))
        db.execute(sql.SQL("DROP FUNCTION IF EXISTS {} CASCADE").format(log))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_concurrent_logins_through_every_node_keep_the_cap(
    cluster: list[PostgresServer], db: psycopg.Connection[Any], table: str, kind: str
) -> None:
    """As on plain PostgreSQL (test_cap_rotate.py), with the logins spread over the nodes."""
    count, cap = 32, 3
    tokens = [new_token() for _ in range(count)]
    # Expiries in no relation to the order of arrival, so the trim's order shows.
    offsets = random.sample(range(count), count)
    expiries = [in_(600 + offset) for offset in offsets]
    options: dict[str, Any] = {"table": table, "cleanup": NoCleanup(), "owners": True}
    options["max_sessions_per_owner"] = cap
    kwargs = {"autocommit": True}

    def login(stores: list[Any], n: int) -> Any:
        # Half commit, half create: both give the new session its owner.
        store = stores[n % len(stores)]
        write = store.commit if n % 2 else store.create
        return write(tokens[n], b"%d" % n, expiries[n], owner="alice")

    with audited(cluster, db, table) as log:
        async with contextlib.AsyncExitStack() as stack:
            if kind == "sync":
                pools = [ConnectionPool(node.dsn, max_size=12, kwargs=kwargs) for node in cluster]
                stores = [Store(stack.enter_context(pool), **options) for pool in pools]
                with ThreadPoolExecutor(count) as executor:
                    list(executor.map(lambda n: login(stores, n), range(count)))
            else:
                apools = [AsyncConnectionPool(n.dsn, max_size=12, kwargs=kwargs) for n in cluster]
                astores = [
                    AsyncStore(await stack.enter_async_context(pool), **options) for pool in apools
                ]
                await asyncio.gather(*(login(astores, n) for n in range(count)))
        ordered = log()
    assert len(ordered) == count
    survivors = live_keys(db, "alice", table)
    assert len(survivors) == cap
    assert ordered[-1][0] in survivors  # the last login stays
    assert survivors == replay(ordered, cap)


async def test_a_plain_table_beside_and_the_explicit_option(
    dsn: str, table: str, db: psycopg.Connection[Any]
) -> None:
    plain = "p_" + secrets.token_hex(4)
    db.execute(ddl(plain).encode())
    try:
        async with AsyncConnectionPool(
            dsn, min_size=1, max_size=2, kwargs={"autocommit": True}
        ) as pool:
            store = AsyncStore(pool, table=plain, cleanup=NoCleanup())
            assert store.distributed is None  # not asked yet
            token = new_token()
            assert await store.create(token, b"x", in_(60)) is True
            assert store.distributed is False  # a local table on a Citus node: the usual SQL
            await store.commit(token, b"y", in_(-1))
            assert await store.create(token, b"z", in_(60)) is True
            assert await store.purge_expired() == 0

            # Told, the store asks nothing (the option promises a distributed table:
            # the Citus forms are only right there).
            told = AsyncStore(pool, table=table, cleanup=NoCleanup(), distributed=True)
            assert told.distributed is True
            await told.commit(token, b"y", in_(-1))
            assert await told.create(token, b"z", in_(60)) is True
            assert await told.create(token, b"z", in_(60)) is False
    finally:
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(plain)))


async def test_purges_from_every_node_take_turns(
    cluster: list[PostgresServer], table: str, db: psycopg.Connection[Any]
) -> None:
    """Purges connected to different nodes exclude each other: no deadlock, each row once."""
    insert_expired(db, table, 20000)
    results: list[int | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def purge(node: PostgresServer) -> None:
        with ConnectionPool(node.dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
            store = Store(pool, table=table, cleanup=NoCleanup())
            try:
                barrier.wait()
                results.append(store.try_purge_expired())
            except BaseException as exc:  # collected: the assertion shows it
                errors.append(exc)

    threads = [threading.Thread(target=purge, args=(node,)) for node in cluster * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r or 0 for r in results) == 20000
    assert None in results  # at least one found another one's purge running, and skipped
    assert count(db, table) == 0


@pytest.mark.parametrize("strategy", ["thread", "task"])
async def test_the_cleanups_keep_a_distributed_table_purged(
    dsn: str, table: str, db: psycopg.Connection[Any], strategy: str
) -> None:
    kwargs = {"autocommit": True}
    insert_expired(db, table, 500)
    if strategy == "thread":
        thread_cleanup = ThreadCleanup(interval=0.1)
        with (
            ConnectionPool(dsn, min_size=1, max_size=2, kwargs=kwargs) as pool,
            Store(pool, table=table, cleanup=thread_cleanup),
        ):
            await _wait_purged(db, table)
            insert_expired(db, table, 300, "older-")
            await _wait_purged(db, table)
        stats = thread_cleanup.stats
    else:
        task_cleanup = TaskCleanup(interval=0.1)
        async with (
            AsyncConnectionPool(dsn, min_size=1, max_size=2, kwargs=kwargs) as apool,
            AsyncStore(apool, table=table, cleanup=task_cleanup),
        ):
            await _wait_purged(db, table)
            insert_expired(db, table, 300, "older-")
            await _wait_purged(db, table)
        stats = task_cleanup.stats
    assert stats.errors == 0
    assert stats.rows_deleted == 800


async def _wait_purged(db: psycopg.Connection[Any], table: str) -> None:
    for _ in range(300):
        if count(db, table) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the cleanup did not purge the table")


def test_cli_purge_check_and_stats(dsn: str, table: str, db: psycopg.Connection[Any]) -> None:
    insert_expired(db, table, 30)
    purged = run("purge", "--dsn", dsn, "--table", table)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == "30\n"

    checked = run("check", "--dsn", dsn, "--table", table)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "check passed" in checked.stdout

    db.execute(
        sql.SQL(
            "INSERT INTO {} (token, data, expiry) SELECT 'live-' || i, '\\x00', "
            "now() + interval '1 h' FROM generate_series(1, 40) AS i"
        ).format(sql.Identifier(table))
    )
    insert_expired(db, table, 3)
    db.execute(
        sql.SQL("UPDATE {} SET data = '\\x01' WHERE token = 'live-1'").format(sql.Identifier(table))
    )
    reading = json.loads(_stats(dsn, table))
    assert (reading["live"], reading["expired"]) == (40, 3)
    with_size = db.execute(
        "SELECT citus_table_size(%s), citus_total_relation_size(%s)", (table, table)
    ).fetchone()
    assert with_size is not None
    assert (
        reading["table_bytes"],
        reading["total_bytes"],
    ) == with_size  # the shards', not the shell's
    assert reading["index_bytes"] == with_size[1] - with_size[0] > 0
    # The statistics collector's counters, summed over the shards on the workers.
    for _ in range(100):
        reading = json.loads(_stats(dsn, table))
        if reading["live_tuples"] >= 43 and reading["updates"] >= 1:
            break
        db.execute("SELECT pg_sleep(0.1)")
    assert reading["live_tuples"] >= 43
    assert reading["updates"] >= 1
    text = run("stats", "--dsn", dsn, "--table", table)
    assert text.returncode == 0, text.stderr
    assert "sessions: 40 live, 3 expired (not yet purged)" in text.stdout
    assert "distributed: 8 shards" in text.stdout


def _stats(dsn: str, table: str) -> str:
    result = run("stats", "--dsn", dsn, "--table", table, "--json")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_migrate_distributed(dsn: str, db: psycopg.Connection[Any]) -> None:
    name = "m_" + secrets.token_hex(4)
    try:
        first = run("migrate", "--dsn", dsn, "--table", name, "--distributed")
        assert first.returncode == 0, first.stderr
        assert "created" in first.stdout
        assert "distributed by token" in first.stdout
        row = db.execute(
            "SELECT partmethod, (SELECT count(*) FROM pg_dist_shard "
            "WHERE logicalrelid = %s::regclass) FROM pg_dist_partition "
            "WHERE logicalrelid = %s::regclass",
            (name, name),
        ).fetchone()
        assert row == ("h", 8)
        again = run("migrate", "--dsn", dsn, "--table", name, "--distributed", "--owners")
        assert again.returncode == 0, again.stderr
        assert "created" in again.stdout  # the owner column, added to the distributed table
        third = run("migrate", "--dsn", dsn, "--table", name, "--distributed", "--owners")
        assert "already up to date" in third.stdout
        with ConnectionPool(dsn, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
            store = Store(pool, table=name, cleanup=NoCleanup(), owners=True)
            token = new_token()
            assert store.create(token, b"x", in_(60), owner="u") is True
            assert store.distributed is True
            assert [s.data for s in store.sessions_of("u")] == [b"x"]
    finally:
        db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def test_migrate_distributed_distributes_an_existing_table(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    name = "e_" + secrets.token_hex(4)
    db.execute(ddl(name).encode())
    try:
        db.execute(
            sql.SQL("INSERT INTO {} VALUES ('kept', '\\x01', now() + interval '1 h')").format(
                sql.Identifier(name)
            )
        )
        result = run("migrate", "--dsn", dsn, "--table", name, "--distributed")
        assert result.returncode == 0, result.stderr
        assert "distributed by token" in result.stdout
        assert count(db, name) == 1
        assert db.execute(
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = %s::regclass", (name,)
        ).fetchone() == (1,)
    finally:
        db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
