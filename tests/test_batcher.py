"""The two batchers behave alike: one DB-free test body per rule, run on both.

`Batcher` (threads) and `AsyncBatcher` (asyncio) are hand-written twins, since they
hand lanes on with different primitives. These tests drive both with plain callables
standing in for the statements (no database: what is tested is the hand-off, the caps
and the failure rule), through one adapter per side.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from sessionstore._batch import Batcher, _Request
from sessionstore._batch_async import AsyncBatcher
from sessionstore._concurrency import LANES, MAX_BATCH, MAX_BATCH_BYTES, Depth, Lanes
from sessionstore._core import Statement
from sessionstore.errors import DatabaseError


def statement(name: str, payload: int = 0) -> Statement:
    return Statement(b"q", (name, b"x" * payload))


def size(s: Statement) -> int:
    return len(s.params[1])


def server_error(name: str) -> DatabaseError:
    """The server answered with an error (a SQLSTATE): one call may be the cause."""
    return DatabaseError("find", psycopg.errors.DeadlockDetected(f"deadlock on {name}"))


def connection_error() -> DatabaseError:
    """No server answered (no SQLSTATE): every call fails alike."""
    return DatabaseError("find", psycopg.OperationalError("connection lost"))


class Fake:
    """The database, as the batcher sees it: records every call, fails where told."""

    def __init__(
        self,
        *,
        fail_combined: Callable[[], DatabaseError] | None = None,
        fail_single: dict[str, DatabaseError] | None = None,
    ) -> None:
        self.fail_combined = fail_combined
        self.fail_single = fail_single or {}
        self.singles: list[str] = []
        self.combined: list[list[str]] = []

    def single(self, s: Statement) -> str:
        self.singles.append(s.params[0])
        if s.params[0] in self.fail_single:
            raise self.fail_single[s.params[0]]
        return f"result {s.params[0]}"

    def many(self, statements: Sequence[Statement]) -> list[str]:
        self.combined.append([s.params[0] for s in statements])
        if self.fail_combined is not None:
            raise self.fail_combined()
        return [f"result {s.params[0]}" for s in statements]


def run_sync(fake: Fake, queued: list[Statement], timeout: float | None = None) -> list[Any]:
    """One lane: a first call holds it while `queued` line up, then lets go.

    With a `timeout`, the first call lets go only once the queued calls have ended,
    which they do by waiting out the timeout in the queue.
    """
    gate, inside = threading.Event(), threading.Event()

    def single(s: Statement) -> str:
        if s.params[0] == "first":
            inside.set()
            gate.wait()
        return fake.single(s)

    wait = 30.0 if timeout is None else timeout
    batcher: Batcher[str] = Batcher(
        "find", single, fake.many, size, limit=lambda: 1, timeout=lambda: wait
    )
    outcomes: list[Any] = [None] * len(queued)

    def call(index: int, s: Statement) -> None:
        try:
            outcomes[index] = batcher.submit(s)
        except DatabaseError as exc:
            outcomes[index] = exc

    first = threading.Thread(target=batcher.submit, args=(statement("first"),))
    first.start()
    assert inside.wait(10)
    threads = [threading.Thread(target=call, args=(i, s)) for i, s in enumerate(queued)]
    for thread in threads:
        thread.start()
    if timeout is not None:
        for thread in threads:
            thread.join(10)
    deadline = time.monotonic() + 10
    while timeout is None and len(batcher._queue) < len(queued):
        assert time.monotonic() < deadline, "calls did not queue"
        time.sleep(0.001)
    gate.set()
    for thread in (first, *threads):
        thread.join(10)
        assert not thread.is_alive()
    return outcomes


def run_async(fake: Fake, queued: list[Statement], timeout: float | None = None) -> list[Any]:
    async def scenario() -> list[Any]:
        gate, inside = asyncio.Event(), asyncio.Event()

        async def single(s: Statement) -> str:
            if s.params[0] == "first":
                inside.set()
                await gate.wait()
            return fake.single(s)

        async def many(statements: Sequence[Statement]) -> list[str]:
            return fake.many(statements)

        wait = 30.0 if timeout is None else timeout
        batcher: AsyncBatcher[str] = AsyncBatcher(
            "find", single, many, size, limit=lambda: 1, timeout=lambda: wait
        )
        first = asyncio.create_task(batcher.submit(statement("first")))
        await inside.wait()
        tasks = [asyncio.create_task(batcher.submit(s)) for s in queued]
        if timeout is not None:
            await asyncio.wait(tasks)
            gate.set()
            await first
            return [task.exception() or task.result() for task in tasks]
        for _ in range(1000):  # each task queues on its first step
            if len(batcher._queue) == len(queued):
                break
            await asyncio.sleep(0)
        assert len(batcher._queue) == len(queued), "calls did not queue"
        gate.set()
        await first
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    return asyncio.run(scenario())


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Callable[[Fake, list[Statement]], list[Any]]:
    return run_sync if request.param == "sync" else run_async


def test_queued_calls_are_combined_and_each_gets_its_own_result(run: Any) -> None:
    fake = Fake()
    queued = [statement(f"s{i}") for i in range(5)]
    assert run(fake, queued) == [f"result s{i}" for i in range(5)]
    assert fake.combined == [[f"s{i}" for i in range(5)]]
    assert fake.singles == ["first"]


def test_a_batch_holds_at_most_max_batch_calls(run: Any) -> None:
    fake = Fake()
    queued = [statement(f"s{i}") for i in range(MAX_BATCH + 3)]
    assert run(fake, queued) == [f"result s{i}" for i in range(MAX_BATCH + 3)]
    assert [len(batch) for batch in fake.combined] == [MAX_BATCH, 3]


def test_a_batch_holds_at_most_max_batch_bytes(run: Any) -> None:
    fake = Fake()
    third = MAX_BATCH_BYTES // 3 + 1  # two fit in a batch, three don't
    queued = [statement(f"s{i}", third) for i in range(4)]
    assert run(fake, queued) == [f"result s{i}" for i in range(4)]
    assert fake.combined == [["s0", "s1"], ["s2", "s3"]]


def test_a_server_error_reruns_each_call_alone_and_fails_only_its_own(run: Any) -> None:
    guilty = server_error("s1")
    fake = Fake(fail_combined=lambda: server_error("batch"), fail_single={"s1": guilty})
    outcomes = run(fake, [statement(f"s{i}") for i in range(3)])
    assert outcomes[0] == "result s0"
    assert outcomes[1] is guilty
    assert outcomes[2] == "result s2"
    assert fake.singles == ["first", "s0", "s1", "s2"]


def test_no_server_answer_fails_every_call_at_once_each_with_its_own_error(run: Any) -> None:
    fake = Fake(fail_combined=connection_error)
    outcomes = run(fake, [statement(f"s{i}") for i in range(3)])
    assert all(isinstance(o, DatabaseError) and o.sqlstate is None for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3  # one instance per caller
    assert fake.singles == ["first"]  # nobody waited out the failure again


def test_a_call_queued_for_the_pools_timeout_fails_and_is_never_sent(run: Any) -> None:
    fake = Fake()
    outcomes = run(fake, [statement(f"s{i}") for i in range(3)], timeout=0.2)
    for outcome in outcomes:
        assert isinstance(outcome, DatabaseError)
        assert isinstance(outcome.__cause__, PoolTimeout)
        assert "0.20 sec" in str(outcome)
    assert fake.singles == ["first"]
    assert fake.combined == []


def test_a_lone_leader_gets_the_very_error_its_statement_raised(run: Any) -> None:
    own = server_error("s0")
    fake = Fake(fail_single={"s0": own})
    assert run(fake, [statement("s0")]) == [own]
    assert fake.combined == []


# The lane rules themselves (`Lanes`), which both batchers consult.


def test_calls_run_alone_up_to_the_cap_and_never_overtake_the_queue() -> None:
    lanes = Lanes(lambda: 4, alone=None)
    assert [lanes.start_alone(queued=False) for _ in range(5)] == [True] * 4 + [False]
    assert lanes.busy == 4
    assert not Lanes(lambda: 4, alone=None).start_alone(queued=True)
    capped = Lanes(lambda: 16, alone=LANES)
    assert [capped.start_alone(queued=False) for _ in range(LANES + 1)] == [True] * LANES + [False]
    assert Lanes(lambda: 1, alone=LANES).start_alone(queued=False)


def test_an_ending_statement_hands_its_turn_to_the_queue_while_lanes_are_few() -> None:
    lanes = Lanes(lambda: 16, alone=None)
    for _ in range(4):
        assert lanes.start_alone(queued=False)
    handed = [lanes.finish(lane=False, queued=True, wall=0.001) for _ in range(4)]
    assert handed == [True] * LANES + [False] * (4 - LANES)
    assert (lanes.busy, lanes.lanes) == (LANES, LANES)
    assert lanes.finish(
        lane=True, queued=True, wall=0.001
    )  # a lane's turn goes on to the next batch
    assert (lanes.busy, lanes.lanes) == (LANES, LANES)
    assert not lanes.finish(lane=True, queued=False, wall=0.001)
    assert not lanes.finish(lane=True, queued=False, wall=0.001)
    assert (lanes.busy, lanes.lanes) == (0, 0)


def test_a_full_batch_opens_another_lane_up_to_the_limit() -> None:
    size = [3]
    lanes = Lanes(lambda: size[0], alone=LANES)
    assert lanes.start_alone(queued=False)
    assert lanes.finish(lane=False, queued=True, wall=0.001)  # now a lane
    assert lanes.open_extra(queued=True)
    assert lanes.open_extra(queued=True)
    assert not lanes.open_extra(queued=True)  # the pool's three connections are in use
    assert not lanes.open_extra(queued=False)
    assert (lanes.busy, lanes.lanes) == (3, 3)
    size[0] = 4  # a resized pool is followed at the next decision
    assert lanes.open_extra(queued=True)
    assert (lanes.busy, lanes.lanes) == (4, 4)


def test_while_lanes_serve_a_queue_new_calls_join_it() -> None:
    lanes = Lanes(lambda: 16, alone=None)
    for _ in range(LANES):
        assert lanes.start_alone(queued=False)
    for _ in range(LANES):
        assert lanes.finish(lane=False, queued=True, wall=0.001)  # the queue got the turns
    assert not lanes.start_alone(queued=False)  # even with the queue just emptied
    # A lane that ends with nobody waiting leaves room: the next call starts at once
    # instead of waiting out the other lane's round trip (its own callers, coming
    # back, would otherwise all queue behind that one lane).
    assert not lanes.finish(lane=True, queued=False, wall=0.001)
    assert lanes.start_alone(queued=False)


def test_threads_join_the_queue_while_any_lane_serves_it() -> None:
    lanes = Lanes(lambda: 16, alone=4, joined=1)
    assert lanes.start_alone(queued=False)
    assert lanes.finish(lane=False, queued=True, wall=0.001)  # one lane serves the queue
    assert not lanes.start_alone(queued=False)
    assert not lanes.finish(lane=True, queued=False, wall=0.001)
    assert lanes.start_alone(queued=False)


class FixedDepth(Depth):
    """A round trip `n` statements deep, as `Depth` measures one on a network."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def __call__(self) -> int:
        return self.n


def test_the_depth_is_unknown_until_a_window_of_statements_ran() -> None:
    depth = Depth()
    for _ in range(Depth.WINDOW - 1):
        depth.record(10.0)
    assert depth() == 0
    depth.record(10.0)
    assert depth() > 0


def test_the_depth_is_the_round_trip_over_the_cpu_per_statement() -> None:
    fast, slow = Depth(), Depth()
    for _ in range(Depth.WINDOW):
        fast.record(1e-9)  # no statement takes less CPU than that: less than one deep
        slow.record(10.0)  # ten seconds on the wire: thousands deep
    assert fast() == 0
    assert slow() > 1000


def test_the_round_trip_is_the_fastest_recent_statement_drifting_up() -> None:
    depth = Depth()
    for _ in range(Depth.WINDOW):
        depth.record(0.001)
    before = depth()
    for _ in range(10 * Depth.WINDOW):
        depth.record(1.0)  # the path got slower: the floor follows, at DRIFT per statement
    assert depth() > 100 * before


def test_a_deep_round_trip_runs_calls_alone_up_to_its_depth_beside_lanes() -> None:
    lanes = Lanes(lambda: 16, alone=LANES, depth=FixedDepth(8))
    assert [lanes.start_alone(queued=False) for _ in range(9)] == [True] * 8 + [False]
    beside = Lanes(lambda: 16, alone=LANES, depth=FixedDepth(8))
    for _ in range(LANES):
        assert beside.start_alone(queued=False)
        assert beside.finish(lane=False, queued=True, wall=0.001)
    assert (beside.busy, beside.lanes) == (LANES, LANES)
    assert beside.start_alone(queued=False)  # a call sent now waits for nothing
    assert not beside.start_alone(queued=True)  # but never overtakes the queue
    assert not Lanes(lambda: 4, alone=LANES, depth=FixedDepth(8)).start_alone(queued=True)
    pool = Lanes(lambda: 4, alone=LANES, depth=FixedDepth(8))
    assert [pool.start_alone(queued=False) for _ in range(5)] == [True] * 4 + [False]


def test_a_deep_round_trip_keeps_as_many_lanes_serving_the_queue() -> None:
    lanes = Lanes(lambda: 16, alone=LANES, depth=FixedDepth(6))
    for _ in range(6):
        assert lanes.start_alone(queued=False)
    assert [lanes.finish(lane=False, queued=True, wall=0.001) for _ in range(6)] == [True] * 6
    assert (lanes.busy, lanes.lanes) == (6, 6)


def test_a_deep_round_trip_spreads_the_queue_over_the_room_it_has() -> None:
    lanes = Lanes(lambda: 16, alone=LANES, depth=FixedDepth(8))
    assert lanes.start_alone(queued=False)
    assert lanes.share(14) == 2  # seven more statements fit: fourteen calls in eight
    shallow = Lanes(lambda: 16, alone=LANES)
    assert shallow.start_alone(queued=False)
    assert shallow.share(14) == 14  # no room measured: one batch takes them all
    small_pool = Lanes(lambda: 4, alone=LANES, depth=FixedDepth(100))
    assert small_pool.start_alone(queued=False)
    assert small_pool.share(12) == 3  # the pool has room for three more statements


class Interrupted(BaseException):
    """Stands in for KeyboardInterrupt, raised by a signal handler in the main thread."""


def test_an_interrupted_queued_caller_leaves_the_queue_and_the_lanes_intact() -> None:
    gate, inside = threading.Event(), threading.Event()
    fake = Fake()

    def single(s: Statement) -> str:
        if s.params[0] == "first":
            inside.set()
            gate.wait()
        return fake.single(s)

    batcher: Batcher[str] = Batcher(
        "find", single, fake.many, size, limit=lambda: 1, timeout=lambda: 30.0
    )
    first = threading.Thread(target=batcher.submit, args=(statement("first"),))
    first.start()
    assert inside.wait(10)

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        # Only once the caller sleeps in the queue: a signal landing a few bytecodes
        # earlier would test something else; then try again a little later.
        if frame is not None and frame.f_code is _Request.wait.__code__:
            raise Interrupted
        signal.setitimer(signal.ITIMER_REAL, 0.05)

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            batcher.submit(statement("interrupted"))  # queues behind "first", then the signal
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(batcher._queue) == 0
    gate.set()
    first.join(10)
    assert batcher.submit(statement("after")) == "result after"
    assert fake.singles == ["first", "after"]
    assert fake.combined == []
