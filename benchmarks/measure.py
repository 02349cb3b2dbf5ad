"""Timed runs: N threads or N asyncio tasks calling one operation in a loop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import random
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .noise import Probe, Snapshot, Usage
from .workload import LIFETIME, Table

#: The share of commits in the mix workload.
MIX_COMMIT_SHARE = 0.1

OPS = ("find", "commit", "mix", "delete")


class Exhausted(Exception):
    """The delete pool ran out during a measurement."""


@dataclasses.dataclass
class Inputs:
    """What the workers work on."""

    tokens: Sequence[str]
    payload: bytes
    delete_tokens: Sequence[str] = ()


@dataclasses.dataclass
class Sample:
    """One measurement of one contender, operation and concurrency."""

    ops: int
    seconds: float
    latencies: array[float]
    exhausted: bool = False
    consumed: int = 0
    usage: Usage | None = None
    cpu_ops: int = 0

    @property
    def ops_per_s(self) -> float:
        """Throughput over the window."""
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Run:
    """One measurement to make."""

    dsn: str
    table: Table
    op: str
    concurrency: int
    warmup: float
    duration: float
    seed: int
    probe: Probe | None = None


@dataclasses.dataclass
class Window:
    """When counting starts and ends (perf_counter seconds); `end` drops to stop early."""

    start: float
    end: float


def window(warmup: float, duration: float) -> Window:
    """Return the counting window of a measurement starting now."""
    start = time.perf_counter() + warmup
    return Window(start, start + duration)


def collect(
    win: Window,
    results: Sequence[tuple[list[float], list[float]]],
    exhausted_at: float | None,
    marks: Sequence[Snapshot] = (),
) -> Sample:
    """The sample of the workers' (end times, latencies), counted up to the window's end."""
    end = win.end if exhausted_at is None else min(win.end, exhausted_at)
    latencies: array[float] = array("d")
    for ends, lats in results:
        latencies.extend(lat for t, lat in zip(ends, lats, strict=True) if t <= end)
    # A window cut short has no snapshot at its real end: no CPU figures then.
    usage = Probe.usage(marks[0], marks[1]) if len(marks) == 2 and exhausted_at is None else None
    n, seconds = len(latencies), max(0.0, end - win.start)
    return Sample(n, seconds, latencies, exhausted_at is not None, usage=usage, cpu_ops=n)


Op = Callable[[random.Random], Any]


def op_call(op: str, client: Any, inputs: Inputs, counter: Iterator[int]) -> Op:
    """A callable doing one `op` on `client`, returning the call (awaitable for async clients)."""
    tokens, n, payload = inputs.tokens, len(inputs.tokens), inputs.payload
    find, commit, delete = client.find, client.commit, client.delete
    now, utc = dt.datetime.now, dt.UTC
    if op == "find":
        return lambda rng: find(tokens[rng.randrange(n)])
    if op == "commit":
        return lambda rng: commit(tokens[rng.randrange(n)], payload, now(utc) + LIFETIME)
    if op == "mix":

        def mix(rng: random.Random) -> Any:
            if rng.random() < MIX_COMMIT_SHARE:
                return commit(tokens[rng.randrange(n)], payload, now(utc) + LIFETIME)
            return find(tokens[rng.randrange(n)])

        return mix
    if op == "delete":
        doomed = inputs.delete_tokens

        def take(rng: random.Random) -> Any:
            i = next(counter)  # atomic under the GIL
            if i >= len(doomed):
                raise Exhausted
            return delete(doomed[i])

        return take
    raise ValueError(f"unknown operation {op!r}")


def run_threads(call: Op, run: Run) -> Sample:
    """Make `call` from `run.concurrency` threads for its warm-up and duration."""
    win, concurrency, seed = window(run.warmup, run.duration), run.concurrency, run.seed
    results: list[tuple[list[float], list[float]]] = [([], []) for _ in range(concurrency)]
    errors: list[BaseException] = []
    exhausted: list[float] = []

    def worker(index: int) -> None:
        rng = random.Random(seed * 100_003 + index)
        ends, lats = results[index]
        clock = time.perf_counter
        try:
            while True:
                t0 = clock()
                call(rng)
                t1 = clock()
                if t1 >= win.start:
                    ends.append(t1)
                    lats.append(t1 - t0)
                if t1 >= win.end:
                    return
        except Exhausted:
            exhausted.append(time.perf_counter())
        except BaseException as exc:
            errors.append(exc)
            win.end = 0.0  # stop the others

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"bench-worker-{i}", daemon=True)
        for i in range(concurrency)
    ]
    marks: list[Snapshot] = []
    stop, probe = threading.Event(), run.probe

    def snap_window() -> None:  # the probe's snapshots at the window's start and end
        for due in (win.start, win.end):
            if probe is None or stop.wait(max(0.0, due - time.perf_counter())):
                return
            marks.append(probe.snap())

    clock = threading.Thread(target=snap_window, name="bench-clock", daemon=True)
    for thread in [clock, *threads]:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        win.end = 0.0
        for thread in threads:
            thread.join()
        raise
    finally:
        # Workers end just after the window: the clock's end snapshot is due now.
        if not errors and not exhausted and win.end > 0:
            clock.join()
        stop.set()
        clock.join()
    if errors:
        raise errors[0]
    return collect(win, results, min(exhausted) if exhausted else None, marks)


async def run_tasks(call: Op, run: Run) -> Sample:
    """Await `call` from `run.concurrency` asyncio tasks for its warm-up and duration."""
    win, seed, probe = window(run.warmup, run.duration), run.seed, run.probe
    exhausted: list[float] = []

    async def worker(index: int) -> tuple[list[float], list[float]]:
        rng = random.Random(seed * 100_003 + index)
        ends: list[float] = []
        lats: list[float] = []
        clock = time.perf_counter
        try:
            while True:
                t0 = clock()
                await call(rng)
                t1 = clock()
                if t1 >= win.start:
                    ends.append(t1)
                    lats.append(t1 - t0)
                if t1 >= win.end:
                    break
        except Exhausted:
            exhausted.append(time.perf_counter())
        return ends, lats

    marks: list[Snapshot] = []
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(worker(i)) for i in range(run.concurrency)]
        if probe is not None:  # ends at the window's end, as the workers do
            group.create_task(snap_window(win, probe, marks))
    return collect(win, [t.result() for t in tasks], min(exhausted) if exhausted else None, marks)


async def snap_window(win: Window, probe: Probe, marks: list[Snapshot]) -> None:
    """Append `probe`'s snapshots at the window's start and end to `marks` (a task's job)."""
    for due in (win.start, win.end):
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        marks.append(probe.snap())


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the `q` quantile (0..1) of sorted values, by the nearest-rank method."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]
