"""No acknowledged commit is ever lost: concurrent load and a stateful test, against models.

Two kinds of check, sync and async:

- 32 workers x 500 mixed operations on a small key space. Each worker owns a few keys,
  so what it reads there must match its own model exactly; the shared keys are
  written by everyone, so a read must return a value written by an operation that
  had started by then, and the final state must be the effect of an operation that
  nothing else followed in real time (the last writes may have raced; the earlier
  ones may not win).
- A hypothesis `RuleBasedStateMachine` of every operation (commit, find, delete, all,
  purge, touch, create, exists, expiry, clear) against a dict,
  with a clock it controls: expiries are whole hours from the database's clock, and
  "time passes" by moving every stored expiry back by whole hours, so no expiry is
  ever within a second of the real clock and nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from _support import db_now
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore._core import hash_token
from sessionstore.cleanup import NoCleanup

WORKERS = 32
OPS_PER_WORKER = 500
OWN_KEYS = 2
SHARED_KEYS = 8
POOL_SIZE = 8

LIVE = dt.timedelta(days=1)
EXPIRED = -dt.timedelta(days=1)


# ---------------------------------------------------------------------- concurrent load


@dataclass
class Op:
    """One operation on one key, with its real-time interval and what it did or saw."""

    kind: str  # "commit", "delete" or "find"
    key: str
    start: float
    end: float
    value: bytes | None = None  # written (commit) or read (find)
    live: bool = True  # for commits: written with an expiry in the future


@dataclass
class WorkerLog:
    """What one worker did, and its model of the keys it owns."""

    number: int
    own: list[str]
    ops: list[Op] = field(default_factory=list)
    #: Own key -> (value, live) after the worker's last acknowledged write.
    model: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


SHARED = [f"shared-{i}" for i in range(SHARED_KEYS)]


def plan(number: int) -> Iterator[tuple[str, str, bool]]:
    """The worker's operations: (operation, key, live), from a seeded generator."""
    rng = random.Random(number)
    own = [f"own-{number}-{i}" for i in range(OWN_KEYS)]
    for _ in range(OPS_PER_WORKER):
        roll = rng.random()
        key = rng.choice(own) if rng.random() < 0.7 else rng.choice(SHARED)
        if roll < 0.40:
            yield "commit", key, rng.random() < 0.85
        elif roll < 0.75:
            yield "find", key, True
        elif roll < 0.90:
            yield "delete", key, True
        elif roll < 0.97:
            yield "all", key, True
        else:
            yield "purge", key, True


class Checker:
    """Checks each worker's reads as it goes, and the final table at the end."""

    def __init__(self) -> None:
        self.logs = [
            WorkerLog(n, [f"own-{n}-{i}" for i in range(OWN_KEYS)]) for n in range(WORKERS)
        ]

    def expect_own(self, log: WorkerLog, key: str) -> bytes | None:
        value, live = log.model.get(key, (None, False))
        return value if live else None

    def after(
        self, log: WorkerLog, operation: str, key: str, live: bool, seq: int, result: Any
    ) -> Op | None:
        """Update the model with an acknowledged operation, check a read; return the Op."""
        value = f"{log.number}:{seq}".encode()
        if operation == "commit":
            if key in log.own:
                log.model[key] = (value, live)
            return Op("commit", key, 0, 0, value, live)
        if operation == "delete":
            log.model.pop(key, None)
            return Op("delete", key, 0, 0)
        if operation == "find":
            if key in log.own and result != self.expect_own(log, key):
                log.errors.append(f"find({key}) = {result!r}, model {log.model.get(key)!r}")
            return Op("find", key, 0, 0, result)
        if operation == "all":
            for own in log.own:
                if result.get(own) != self.expect_own(log, own):
                    log.errors.append(f"all()[{own}] = {result.get(own)!r}, model {log.model}")
        if operation == "purge" and not (result is None or result >= 0):
            log.errors.append(f"purge returned {result!r}")
        return None

    def check_final(self, dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT token, data, current_timestamp < expiry FROM sessions"
            ).fetchall()
        visible = {token: bytes(data) for token, data, live in rows if live}
        stored = {token: bytes(data) for token, data, _ in rows}
        errors = [e for log in self.logs for e in log.errors]
        assert errors == []
        for log in self.logs:
            for key in log.own:
                value, live = log.model.get(key, (None, False))
                assert visible.get(key) == (value if live else None), key
                if value is None:
                    assert key not in stored, key  # deleted stays deleted
                elif not live:
                    assert stored.get(key, value) == value, key  # expired: kept or purged
        ops = [op for log in self.logs for op in log.ops]
        for key in SHARED:
            self.check_shared(key, [op for op in ops if op.key == key], visible.get(key))

    @staticmethod
    def check_shared(key: str, ops: list[Op], final: bytes | None) -> None:
        writes = [op for op in ops if op.kind != "find"]
        # Each read saw nothing, or a value written by a commit that had begun by then.
        for read in (op for op in ops if op.kind == "find"):
            if read.value is not None:
                assert any(
                    w.kind == "commit" and w.value == read.value and w.start <= read.end
                    for w in writes
                ), f"{key}: a read returned a value nobody had written yet"
        if not writes:
            assert final is None
            return
        # The final state is the effect of a write that no other write followed in real
        # time: an acknowledged write followed by nothing is never lost.
        last = [w for w in writes if not any(o.start > w.end for o in writes if o is not w)]
        effects = {w.value if w.kind == "commit" and w.live else None for w in last}
        assert final in effects, f"{key}: final {final!r} not among {effects!r}"


def run_sync_worker(store: Store, checker: Checker, log: WorkerLog) -> None:
    for seq, (operation, key, live) in enumerate(plan(log.number)):
        value = f"{log.number}:{seq}".encode()
        start = time.monotonic()
        try:
            result: Any = None
            if operation == "commit":
                store.commit(key, value, dt.datetime.now(dt.UTC) + (LIVE if live else EXPIRED))
            elif operation == "find":
                result = store.find(key)
            elif operation == "delete":
                store.delete(key)
            elif operation == "all":
                result = store.all()
            else:
                result = store.try_purge_expired()
        except Exception as exc:  # every failure is a test failure, reported at the end
            log.errors.append(f"{operation}({key}) raised {exc!r}")
            continue
        end = time.monotonic()
        op = checker.after(log, operation, key, live, seq, result)
        if op is not None:
            op.start, op.end = start, end
            log.ops.append(op)


async def run_async_worker(store: AsyncStore, checker: Checker, log: WorkerLog) -> None:
    for seq, (operation, key, live) in enumerate(plan(log.number)):
        value = f"{log.number}:{seq}".encode()
        start = time.monotonic()
        try:
            result: Any = None
            if operation == "commit":
                expiry = dt.datetime.now(dt.UTC) + (LIVE if live else EXPIRED)
                await store.commit(key, value, expiry)
            elif operation == "find":
                result = await store.find(key)
            elif operation == "delete":
                await store.delete(key)
            elif operation == "all":
                result = await store.all()
            else:
                result = await store.try_purge_expired()
        except Exception as exc:  # every failure is a test failure, reported at the end
            log.errors.append(f"{operation}({key}) raised {exc!r}")
            continue
        end = time.monotonic()
        op = checker.after(log, operation, key, live, seq, result)
        if op is not None:
            op.start, op.end = start, end
            log.ops.append(op)


@pytest.mark.slow
def test_32_threads_x_500_operations_lose_no_acknowledged_commit(sessionstore_dsn: str) -> None:
    checker = Checker()
    with ConnectionPool(
        sessionstore_dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs={"autocommit": True}
    ) as pool:
        store = Store(pool, cleanup=NoCleanup())
        pool.wait()
        threads = [
            threading.Thread(target=run_sync_worker, args=(store, checker, log))
            for log in checker.logs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
    assert sum(len(log.ops) for log in checker.logs) > WORKERS * OPS_PER_WORKER * 0.8
    checker.check_final(sessionstore_dsn)


@pytest.mark.slow
async def test_32_tasks_x_500_operations_lose_no_acknowledged_commit(
    sessionstore_dsn: str,
) -> None:
    checker = Checker()
    async with AsyncConnectionPool(
        sessionstore_dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs={"autocommit": True}
    ) as apool:
        store = AsyncStore(apool, cleanup=NoCleanup())
        await apool.wait()
        async with asyncio.timeout(120):
            await asyncio.gather(*(run_async_worker(store, checker, log) for log in checker.logs))
    assert sum(len(log.ops) for log in checker.logs) > WORKERS * OPS_PER_WORKER * 0.8
    await asyncio.to_thread(checker.check_final, sessionstore_dsn)


def test_the_model_checker_catches_a_lost_write() -> None:
    """The shared-key check is not vacuous: a final state from an overtaken write fails."""
    first = Op("commit", "k", 0.0, 1.0, b"first")
    second = Op("commit", "k", 2.0, 3.0, b"second")
    Checker.check_shared("k", [first, second], b"second")
    with pytest.raises(AssertionError, match="not among"):
        Checker.check_shared("k", [first, second], b"first")
    racing = Op("commit", "k", 0.5, 2.5, b"racing")  # overlaps both: may land last
    Checker.check_shared("k", [first, racing, second], b"racing")
    with pytest.raises(AssertionError, match="nobody had written"):
        Checker.check_shared("k", [first, Op("find", "k", 0.1, 0.2, b"second")], b"first")


# ---------------------------------------------------------------------- stateful test

#: A small key space, with a few tokens that are legal but unusual.
TOKENS = ["a", "b", "c", "tok en", "ü-ñ", "x" * 512, "'; DROP TABLE sessions; --"]
#: Owners a commit may give (None: keep the row's), with owners=True.
OWNERS: list[str | None] = [None, "u1", "u2"]


@dataclass
class Context:
    """What the state machine runs against: a store, how to call it, the database."""

    store: Store | AsyncStore
    call: Callable[[Any], Any]
    db: psycopg.Connection[Any]
    t0: dt.datetime
    hashed: bool
    owners: bool = False


def machine_for(ctx: Context) -> type[RuleBasedStateMachine]:
    """A state machine class bound to one store."""

    class SessionStoreMachine(RuleBasedStateMachine):
        """Every store operation and a moving clock, against a dict."""

        def __init__(self) -> None:
            super().__init__()
            ctx.db.execute("TRUNCATE sessions")
            # Token -> (data, expiry in whole hours from t0, the database clock at start).
            self.model: dict[str, tuple[bytes, int]] = {}
            # Token -> its owner (with owners=True), for every token in the model.
            self.owner: dict[str, str | None] = {}

        def forget(self, token: str) -> None:
            self.model.pop(token, None)
            self.owner.pop(token, None)

        def expiry(self, hours: int) -> dt.datetime:
            return ctx.t0 + dt.timedelta(hours=hours)

        def key(self, token: str) -> str:
            return hash_token(token) if ctx.hashed else token

        def live(self) -> dict[str, bytes]:
            # Expiry t0 + h is in the future iff h >= 1: the test runs for well under an hour.
            return {t: data for t, (data, hours) in self.model.items() if hours >= 1}

        @rule(
            token=st.sampled_from(TOKENS),
            data=st.binary(max_size=64),
            hours=st.integers(-3, 3),
            owner=st.sampled_from(OWNERS),
        )
        def commit(self, token: str, data: bytes, hours: int, owner: str | None) -> None:
            owner = owner if ctx.owners else None
            ctx.call(ctx.store.commit(token, data, self.expiry(hours), owner=owner))
            self.model[token] = (data, hours)
            self.owner[token] = owner if owner is not None else self.owner.get(token)

        @rule(token=st.sampled_from(TOKENS))
        def find(self, token: str) -> None:
            assert ctx.call(ctx.store.find(token)) == self.live().get(token)

        @rule(token=st.sampled_from(TOKENS))
        def delete(self, token: str) -> None:
            ctx.call(ctx.store.delete(token))
            self.forget(token)

        @rule(token=st.sampled_from(TOKENS), hours=st.integers(-3, 3))
        def touch(self, token: str, hours: int) -> None:
            live = token in self.live()
            assert ctx.call(ctx.store.touch(token, self.expiry(hours))) is live
            if live:
                self.model[token] = (self.model[token][0], hours)

        @rule(
            token=st.sampled_from(TOKENS),
            data=st.binary(max_size=64),
            hours=st.integers(-3, 3),
            owner=st.sampled_from(OWNERS),
        )
        def create(self, token: str, data: bytes, hours: int, owner: str | None) -> None:
            owner = owner if ctx.owners else None
            free = token not in self.live()
            made = ctx.call(ctx.store.create(token, data, self.expiry(hours), owner=owner))
            assert made is free
            if free:
                self.model[token] = (data, hours)
                self.owner[token] = owner if owner is not None else self.owner.get(token)

        @precondition(lambda self: ctx.owners)
        @rule(token=st.sampled_from(TOKENS), owner=st.sampled_from(OWNERS))
        def set_owner(self, token: str, owner: str | None) -> None:
            live = token in self.live()
            assert ctx.call(ctx.store.set_owner(token, owner)) is live
            if live:
                self.owner[token] = owner

        @precondition(lambda self: ctx.owners)
        @rule(owner=st.sampled_from(OWNERS[1:]))
        def sessions_of(self, owner: str) -> None:
            listed = ctx.call(ctx.store.sessions_of(owner))
            expected = {
                (self.key(t), data) for t, data in self.live().items() if self.owner[t] == owner
            }
            assert {(s.key, s.data) for s in listed} == expected
            assert [s.expiry for s in listed] == sorted(s.expiry for s in listed)

        @precondition(lambda self: ctx.owners)
        @rule(owner=st.sampled_from(OWNERS[1:]), keep=st.sampled_from([None, *TOKENS]))
        def delete_owned(self, owner: str, keep: str | None) -> None:
            gone = [t for t in self.model if self.owner[t] == owner and t != keep]
            assert ctx.call(ctx.store.delete_owned(owner, keep=keep)) == len(gone)
            for token in gone:
                self.forget(token)

        @precondition(lambda self: ctx.owners)
        @rule(owner=st.sampled_from(OWNERS[1:]), token=st.sampled_from(TOKENS))
        def revoke(self, owner: str, token: str) -> None:
            theirs = token in self.model and self.owner[token] == owner
            assert ctx.call(ctx.store.revoke(owner, self.key(token))) is theirs
            if theirs:
                self.forget(token)

        @rule(token=st.sampled_from(TOKENS))
        def exists_and_expiry(self, token: str) -> None:
            live = token in self.live()
            assert ctx.call(ctx.store.exists(token)) is live
            expected = self.expiry(self.model[token][1]) if live else None
            assert ctx.call(ctx.store.expiry(token)) == expected

        @rule(batch_size=st.sampled_from([None, 1, 3]))
        def clear(self, batch_size: int | None) -> None:
            assert ctx.call(ctx.store.clear(batch_size=batch_size)) == len(self.model)
            self.model, self.owner = {}, {}

        @rule()
        def all(self) -> None:
            expected = {self.key(t): data for t, data in self.live().items()}
            assert ctx.call(ctx.store.all()) == expected

        @rule(batch_size=st.sampled_from([None, 1, 2]))
        def purge(self, batch_size: int | None) -> None:
            expired = [t for t, (_, hours) in self.model.items() if hours < 1]
            assert ctx.call(ctx.store.purge_expired(batch_size=batch_size)) == len(expired)
            for token in expired:
                self.forget(token)

        @rule(hours=st.integers(1, 3))
        def time_passes(self, hours: int) -> None:
            ctx.db.execute("UPDATE sessions SET expiry = expiry - %s * interval '1 hour'", (hours,))
            self.model = {t: (data, h - hours) for t, (data, h) in self.model.items()}

        @invariant()
        def table_matches_the_model(self) -> None:
            rows = ctx.db.execute("SELECT token, data, expiry FROM sessions").fetchall()
            expected = {
                self.key(t): (data, self.expiry(hours)) for t, (data, hours) in self.model.items()
            }
            assert {token: (bytes(data), expiry) for token, data, expiry in rows} == expected
            if ctx.owners:
                owners = dict(ctx.db.execute("SELECT token, owner FROM sessions").fetchall())
                assert owners == {self.key(t): owner for t, owner in self.owner.items()}

    return SessionStoreMachine


STATEFUL_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed-owners"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stateful_against_a_dict_model(sessionstore_dsn: str, kind: str, hashed: bool) -> None:
    with psycopg.connect(sessionstore_dsn, autocommit=True) as db:
        t0 = db_now(db)
        if kind == "sync":
            with ConnectionPool(
                sessionstore_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}
            ) as pool:
                store = Store(pool, cleanup=NoCleanup(), hash_tokens=hashed, owners=hashed)
                store.create_table()  # with owners: adds the owner column
                ctx = Context(store, lambda result: result, db, t0, hashed, owners=hashed)
                run_state_machine_as_test(machine_for(ctx), settings=STATEFUL_SETTINGS)
            return
        with asyncio.Runner() as runner:
            apool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                sessionstore_dsn,
                min_size=1,
                max_size=2,
                kwargs={"autocommit": True},
                open=False,
            )
            runner.run(apool.open(wait=True))
            try:
                astore = AsyncStore(apool, cleanup=NoCleanup(), hash_tokens=hashed, owners=hashed)
                runner.run(astore.create_table())

                def call(awaitable: Awaitable[Any]) -> Any:
                    async def run() -> Any:
                        return await awaitable

                    return runner.run(run())

                ctx = Context(astore, call, db, t0, hashed, owners=hashed)
                run_state_machine_as_test(machine_for(ctx), settings=STATEFUL_SETTINGS)
            finally:
                runner.run(apool.close())
