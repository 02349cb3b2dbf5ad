"""What one thread-to-thread hand-off costs here: ``python -m benchmarks.handoff``.

`Store` serves a queue of threads with one combined statement, then wakes each of its
callers (each woken caller wakes the next: see `sessionstore._batch`). However cheap
the statement gets, every call pays at least that wake-up, and the woken thread must
take the GIL back. This measures the wake-up alone, with no database: N threads in a
ring, each sleeping on its own lock and releasing the next one's, the batcher's
primitive (`threading.Lock`, created held). Process CPU (every thread, kernel time
included) and wall time per hand-off, the minimum of the rounds (the best estimate on
a shared machine), with the CPU the host stole during the run.

Compare with the client CPU per find in ``python -m benchmarks``: at 64 callers
`Store` spends about twice this per find more than `AsyncStore` does, whose hand-off
is a future.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence

from .noise import Meter, Noise


def ring(threads: int, hops: int) -> tuple[float, float]:
    """Pass a turn around `threads` threads `hops` times; (CPU µs, wall µs) per hop."""
    locks = [threading.Lock() for _ in range(threads)]
    for lock in locks:
        lock.acquire()
    done = threading.Event()
    count = 0

    def run(index: int) -> None:
        nonlocal count
        mine, successor = locks[index], locks[(index + 1) % threads]
        while True:
            mine.acquire()
            if done.is_set():
                successor.release()  # pass the end on, so every thread returns
                return
            count += 1  # only the thread holding the turn runs here
            if count >= hops:
                done.set()
            successor.release()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    cpu, wall = time.process_time(), time.perf_counter()
    locks[0].release()
    done.wait()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for worker in workers:
        worker.join()
    return cpu / hops * 1e6, wall / hops * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the hand-off's cost; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handoff")
    parser.add_argument("--threads", default="2,16,64", help="ring sizes (2,16,64)")
    parser.add_argument("--hops", type=int, default=20_000, help="hand-offs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per ring size (5)")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.threads.split(",")]
    print(f"one thread waking the next, {args.rounds} rounds of {args.hops:,} hand-offs")
    print("  threads  CPU us/hand-off (min)  wall us/hand-off (min)  noise (worst round)")
    for size in sizes:
        results: list[tuple[float, float]] = []
        noises: list[Noise] = []
        for _ in range(args.rounds):
            meter = Meter()
            results.append(ring(size, args.hops))
            noises.append(meter.read())
        cpu = min(result[0] for result in results)
        wall = min(result[1] for result in results)
        worst = max(noises, key=lambda noise: noise.steal or 0.0)
        print(f"  {size:7}  {cpu:21.1f}  {wall:22.1f}  {worst.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
