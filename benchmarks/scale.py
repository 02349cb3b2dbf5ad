"""The scale part (``--scale``): find latency as the table grows, and walking all sessions."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import gc
import os
import random
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore._from_dsn import create_table
from sessionstore.cleanup import NoCleanup

from .contenders import BY_KEY, measure_python
from .measure import Inputs, Run, Sample
from .report import aligned, num, rates
from .runner import PRELOAD_LIFETIME, Settings
from .workload import Table, sample_ids, token

#: The contenders whose find latency is measured at each size.
FIND_CONTENDERS = ("store", "async_store", "raw_sync")

_TOKEN_SAMPLE = 100_000

#: The walks over every session, the streaming one first.
WALKS = ("iter_all", "all")


def _rss() -> int:
    """The process's resident memory in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _walk_sync(store: Store, method: str) -> int:
    if method == "all":
        return len(store.all())
    with store.iter_all() as sessions:
        return sum(1 for _ in sessions)


def _walk_async(dsn: str, table: Table, method: str) -> int:
    async def walk() -> int:
        async with AsyncConnectionPool(
            dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
        ) as pool:
            store = AsyncStore(pool, table=table.name, cleanup=NoCleanup())
            try:
                if method == "all":
                    return len(await store.all())
                count = 0
                async with store.iter_all() as sessions:
                    async for _ in sessions:
                        count += 1
                return count
            finally:
                await store.aclose()

    return asyncio.run(walk())


def _measure_walk(run_once: Callable[[], int]) -> dict[str, float]:
    """Time one walk while a thread samples RSS for its peak growth, then trace a second
    one with tracemalloc."""
    gc.collect()
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
    sampler.start()
    try:
        started = time.perf_counter()
        rows = run_once()
        seconds = time.perf_counter() - started
    finally:
        done.set()
        sampler.join()
    rss_growth = (max(peak[0], _rss()) - base) / 2**20
    gc.collect()
    tracemalloc.start()
    try:
        run_once()
        _, traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    gc.collect()
    memory = {"tracemalloc_peak_mib": traced / 2**20, "rss_peak_mib": rss_growth}
    return {"rows": rows, "seconds": seconds, **memory}


def run_scale(dsn: str, settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the scale part."""
    table = Table(settings.table + "_scale")
    sizes = sorted(set(settings.scale_rows))
    rng = random.Random(settings.seed + 3)
    payload = rng.randbytes(settings.payload)
    finds: list[dict[str, Any]] = []
    walks: list[dict[str, Any]] = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        table.drop(admin)
        try:
            create_table(dsn, table.name)
            loaded = 0
            expiry = dt.datetime.now(dt.UTC) + PRELOAD_LIFETIME
            for size in sizes:
                say(f"scale: loading {size:,} rows")
                table.preload(admin, loaded, size, settings.payload, expiry, rng)
                loaded = size
                table.vacuum(admin, analyze=True)
                tokens = [token(i) for i in sample_ids(size, _TOKEN_SAMPLE, rng)]
                samples: dict[str, list[Sample]] = {key: [] for key in FIND_CONTENDERS}
                for rnd in range(settings.rounds):
                    for key in FIND_CONTENDERS:  # interleaved, as in the main part
                        say(f"scale: find at {size:,} rows, round {rnd + 1}, {BY_KEY[key].label}")
                        run = Run(dsn, table, "find", 1, settings.warmup, settings.duration, rnd)
                        samples[key].append(
                            measure_python(BY_KEY[key], run, Inputs(tokens, payload))
                        )
                for key, runs in samples.items():
                    rate, _, p50, p99, *_ = rates(runs, runs)
                    figures = {"ops_per_s": rate, "p50_ms": p50, "p99_ms": p99}
                    finds.append(
                        {"rows": size, "contender": key, "label": BY_KEY[key].label, **figures}
                    )
            walks = _walks(dsn, table, sizes[-1], say)
        finally:
            if not settings.keep_table:
                table.drop(admin)
    return {"find": finds, "walk": walks}


def _walks(dsn: str, table: Table, rows: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Time `Store` and `AsyncStore`'s ``iter_all()`` and ``all()`` over the table."""
    walks: list[dict[str, Any]] = []
    with ConnectionPool(
        dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True
    ) as pool:
        store = Store(pool, table=table.name, cleanup=NoCleanup())
        stores = {"Store": functools.partial(_walk_sync, store)}
        stores["AsyncStore"] = functools.partial(_walk_async, dsn, table)
        for name, walk in stores.items():
            for method in WALKS:
                say(f"scale: {name}.{method}() over {rows:,} rows")
                stats = _measure_walk(functools.partial(walk, method))
                walks.append({"store": name, "method": method, "table_rows": rows, **stats})
        store.close()
    return walks


def format_scale(result: dict[str, Any]) -> str:
    """Render the scale part as aligned text."""
    finds = [("rows", "contender", "ops/s", "p50 ms", "p99 ms")]
    for f in result["find"]:
        figures = (num(f["ops_per_s"]), num(f["p50_ms"], 3), num(f["p99_ms"], 3))
        finds.append((f"{f['rows']:,}", f["label"], *figures))
    walks = [("method", "rows", "seconds", "tracemalloc peak MiB", "RSS growth MiB")]
    for w in result["walk"]:
        method = f"{w['store']}.{w['method']}()"
        memory = (num(w["tracemalloc_peak_mib"]), num(w["rss_peak_mib"]))
        walks.append((method, num(w["rows"]), num(w["seconds"], 2), *memory))
    head = "scale: find at N=1 by table size (ops/s median of rounds; p50/p99 over all)"
    lines = [head, *aligned(finds, 2), "", "scale: reading every live session", *aligned(walks, 2)]
    return "\n".join(lines)
