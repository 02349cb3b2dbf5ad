"""The throughput part: set the table up, then measure every contender in interleaved rounds
(docs/performance.md#noise); the interleaving serves ``python -m benchmarks.web`` too."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from subprocess import PIPE
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from sessionstore import Store
from sessionstore._from_dsn import create_table, distribute_table
from sessionstore.cleanup import NoCleanup

from .contenders import BY_KEY, CONTENDERS, KEYRING, Contender, measure_python, pool_size
from .measure import OPS, Inputs, Run, Sample
from .noise import Probe, postmaster_of
from .pgbench import Pgbench
from .progress import Progress
from .workload import DeletePool, Table, sample_ids, token

#: How many live tokens the workers pick from (all of them up to this many rows).
TOKEN_SAMPLE = 200_000

#: Where the encrypting contenders' rows start: ids no other contender picks (pgbench's
#: are below `rows`, the delete pool's just above it), so no plaintext ever lands there.
ENCRYPTED_BASE = 1 << 40

#: The fastest delete rate the delete pool is sized for, in rows per second (pgbench on
#: a server without fsync); a faster run marks its sample as exhausted instead of
#: deleting missing rows unnoticed.
DELETE_RATE_CEILING = 50_000

#: Expiry of the preloaded live sessions: well beyond any run.
PRELOAD_LIFETIME = dt.timedelta(days=7)

T = TypeVar("T")
Key = tuple[str, str, str, int]  # (network, op, contender key, concurrency)

#: The network label of direct connections (no proxy).
LOOPBACK = "loopback"

#: A round in which a sample was noisy is measured again at most this many times.
NOISY_RERUNS = 1


def network_label(delay_ms: float | None) -> str:
    """``"loopback"`` for direct connections, else e.g. ``"0.5 ms"`` (the delay each way)."""
    return LOOPBACK if delay_ms is None else f"{delay_ms:g} ms"


@dataclasses.dataclass
class Settings:
    """What to run (the command line's options)."""

    rows: int = 100_000
    payload: int = 200
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    rounds: int = 3
    duration: float = 2.0
    warmup: float = 0.5
    ops: tuple[str, ...] = OPS
    contenders: tuple[str, ...] = tuple(c.key for c in CONTENDERS)
    table: str = "bench_sessions"
    seed: int = 1
    pgbench: str | None = None
    keep_table: bool = False
    scale: bool = False
    scale_rows: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    networks: tuple[float | None, ...] = (None, 0.5)
    max_steal: float = 0.10
    citus: bool = False


def delete_pool_size(settings: Settings) -> int:
    """Rows the delete pool must hold for one measurement (pgbench runs whole seconds)."""
    seconds = max(1, math.ceil(settings.warmup + settings.duration + 0.25))
    return max(1000, DELETE_RATE_CEILING * seconds)


class Bench:
    """The throughput benchmark against one database."""

    def __init__(self, dsn: str, settings: Settings, pgbench_path: str | None) -> None:
        self.dsn = dsn
        self.settings = settings
        self.table = Table(settings.table)
        rng = random.Random(settings.seed)
        self.payload = rng.randbytes(settings.payload)
        self.tokens: list[str] = []
        self.encrypted_tokens: list[str] = []
        self.contenders: list[Contender] = [BY_KEY[k] for k in settings.contenders]
        if pgbench_path is None:
            self.contenders = [c for c in self.contenders if c.kind != "pgbench"]
        self._pgbench_path = pgbench_path
        self._pgbench: Pgbench | None = None
        self._admin: psycopg.Connection[Any] | None = None
        self._opened = contextlib.ExitStack()  # what `close` undoes
        self._pool = DeletePool(self.table, settings.rows, self.payload)
        self.server_pid: int | None = None
        #: The DSN and probe of the network being measured (see `use_network`).
        self.network = LOOPBACK
        self._dsn = dsn
        self._probe = Probe()

    def setup(self, say: Callable[[str], None] = lambda _: None) -> None:
        """Create the table with `Store.create_table`, preload it with COPY, check it."""
        s = self.settings
        self._admin = admin = self._opened.enter_context(psycopg.connect(self.dsn, autocommit=True))
        if not s.keep_table:
            self._opened.callback(self.table.drop, admin)
        self.server_pid = postmaster_of(admin.info.backend_pid)
        self._probe = Probe(self.server_pid)
        self.table.drop(admin)
        create_table(self.dsn, self.table.name)
        if s.citus:
            say("distributing the table by token (Citus)")
            distribute_table(self.dsn, self.table.name)
        with ConnectionPool(
            self.dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True
        ) as pool:
            say(f"preloading {s.rows:,} sessions ({s.payload}-byte payloads) with COPY")
            rng = random.Random(s.seed + 1)
            expiry = dt.datetime.now(dt.UTC) + PRELOAD_LIFETIME
            self.table.preload(admin, 0, s.rows, s.payload, expiry, rng)
            self.table.vacuum(admin, analyze=True)
            self.table.check_tokens(admin, [0, s.rows - 1])
            ids = sample_ids(s.rows, TOKEN_SAMPLE, random.Random(s.seed + 2))
            self.tokens = [token(i) for i in ids]
            if any(c.encrypted for c in self.contenders):
                say(f"preloading {s.rows:,} encrypted sessions for the encrypting contenders")
                stop = ENCRYPTED_BASE + s.rows
                self.table.preload(admin, ENCRYPTED_BASE, stop, s.payload, expiry, rng, KEYRING)
                self.table.vacuum(admin, analyze=True)
                self.encrypted_tokens = [token(ENCRYPTED_BASE + i) for i in ids]
            for keyring, tokens in ((None, self.tokens), (KEYRING, self.encrypted_tokens)):
                store = Store(pool, table=self.table.name, cleanup=NoCleanup(), encryption=keyring)
                if tokens and store.find(tokens[0]) is None:
                    raise RuntimeError("the store does not find a preloaded session")
        if self._pgbench_path is not None:
            workdir = Path(self._opened.enter_context(tempfile.TemporaryDirectory()))
            self._pgbench = Pgbench(
                self._pgbench_path, self.dsn, self.table, s.rows, self.payload, workdir
            )
            dropped = self._pgbench.check()
            if dropped:
                say(f"pgbench's libpq does not know {', '.join(dropped)}: left out for pgbench")

    def close(self) -> None:
        """Drop the table (unless asked to keep it) and close the admin connection."""
        self._opened.close()

    def use_network(self, label: str, dsn: str, helpers: dict[str, int] | None = None) -> None:
        """Measure from now on through `dsn` (e.g. a proxy's), labelled `label`."""
        self.network, self._dsn = label, dsn
        self._probe = Probe(self.server_pid, helpers or {})

    def measure(self, contender: Contender, op: str, concurrency: int, seed: int) -> Sample:
        """Make one measurement on the current network."""
        s = self.settings
        delete_base, delete_tokens = 0, list[str]()
        if op == "delete":
            assert self._admin is not None
            delete_base, delete_tokens = self._pool.prepare(self._admin, delete_pool_size(s))
        if contender.kind == "pgbench":
            assert self._pgbench is not None
            dsn = None if self._dsn == self.dsn else self._dsn
            n, pool = len(delete_tokens), pool_size(concurrency)
            sample = self._pgbench.measure(
                op, pool, s.warmup, s.duration, delete_base, n, dsn, self._probe
            )
        else:
            args = (op, concurrency, s.warmup, s.duration, seed, self._probe)
            run = Run(self._dsn, self.table, *args)
            tokens = self.encrypted_tokens if contender.encrypted else self.tokens
            inputs = Inputs(tokens, self.payload, delete_tokens)
            sample = measure_python(contender, run, inputs)
        if op == "delete":
            self._pool.consume(sample.consumed)
        return sample

    def after_deletes(self) -> None:
        """Sweep the delete pool's leftovers away, so other operations see `rows` rows."""
        assert self._admin is not None
        self._pool.clear(self._admin)

    def plan(self) -> list[tuple[str, int, int, Contender]]:
        """Every measurement of one network, in order: ops, concurrency, rounds, contenders."""
        s = self.settings
        return interleave([(op,) for op in s.ops], s.concurrency, s.rounds, self.contenders)

    def run(self, progress: Progress) -> dict[Key, list[Sample]]:
        """Run every measurement of `plan` on the current network."""
        s = self.settings
        samples: dict[Key, list[Sample]] = {}
        seeds = itertools.count(s.seed * 7919)

        def one(step: tuple[Any, ...], attempt: int) -> bool:
            op, n, _, contender = step
            sample = self.measure(contender, op, n, next(seeds))
            samples.setdefault((self.network, op, contender.key, n), []).append(sample)
            return sample.usage is not None and sample.usage.noise.noisy(s.max_steal)

        where = "" if self.network == LOOPBACK else f" [{self.network}]"
        for op in s.ops:
            mine = [step for step in self.plan() if step[0] == op]
            run_rounds(mine, s.rounds, progress, one, where)
            if op == "delete":
                self.after_deletes()
        return samples


def interleave(
    cells: Sequence[tuple[Any, ...]],
    concurrency: Sequence[int],
    rounds: int,
    contenders: Sequence[T],
) -> list[tuple[Any, ...]]:
    """Every measurement of `cells` at each concurrency, a cell at a time: round 1 of every
    contender, then round 2, ..., each round starting with another contender."""
    steps: list[tuple[Any, ...]] = []
    for cell in cells:
        for ci, n in enumerate(concurrency):
            for rnd in range(rounds):
                shift = (rnd + ci) % len(contenders)
                steps += [(*cell, n, rnd, c) for c in [*contenders[shift:], *contenders[:shift]]]
    return steps


def run_rounds(
    steps: Sequence[tuple[Any, ...]],
    rounds: int,
    progress: Progress,
    measure: Callable[[tuple[Any, ...], int], bool],
    where: str = "",
) -> None:
    """Measure `steps` (from `interleave`) round by round; `measure(step, attempt)` says
    whether its sample was noisy, and a round with one is measured once more, every contender."""
    grouped: dict[tuple[Any, ...], list[Any]] = {}
    for *head, contender in steps:
        grouped.setdefault(tuple(head), []).append(contender)
    for (*cell, n, rnd), order in grouped.items():
        for attempt in range(1 + NOISY_RERUNS):
            noisy = False
            for contender in order:
                again = " (re-run: noisy)" if attempt else ""
                what = ", ".join([*map(str, cell), f"N={n}", contender.label])
                label = f"round {rnd + 1}/{rounds}{again}: {what}{where}"
                progress.show(label)
                noisy = measure((*cell, n, rnd, contender), attempt) or noisy
                if not attempt:
                    progress.step(label)
            if not noisy:
                break


#: The network mode's proxy process: `sessionstore.testing.TcpProxy` in ``delay`` mode,
#: in a process of its own (in a thread of the benchmark it would share the GIL and the
#: CPU with the contenders it delays), on a `select` loop (epoll's timeout is rounded up
#: to a millisecond, so a 0.5 ms delay would take 1 ms; select's is in microseconds).
#: It prints its port once it listens and runs until its stdin closes.
_PROXY_CHILD = """
import asyncio, selectors, sys
from sessionstore.testing import TcpProxy

class SelectLoops(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return asyncio.SelectorEventLoop(selectors.SelectSelector())

asyncio.set_event_loop_policy(SelectLoops())
with TcpProxy(sys.argv[1], int(sys.argv[2])) as proxy:
    proxy.delay(float(sys.argv[3]) / 1000)
    print(proxy.port, flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
"""


@contextlib.contextmanager
def delay_proxy(dsn: str, delay_ms: float) -> Iterator[tuple[str, int]]:
    """A proxy process adding `delay_ms` each way in front of `dsn`'s server."""
    params = conninfo_to_dict(dsn)
    host = str(params.get("hostaddr") or params.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        raise ValueError(f"network mode needs the server's TCP address in the DSN, not {host!r}")
    argv = [sys.executable, "-c", _PROXY_CHILD, host, str(params.get("port") or 5432)]
    proc = subprocess.Popen([*argv, str(delay_ms)], stdin=PIPE, stdout=PIPE, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the delaying proxy did not start (it said {port!r})")
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=port)
        yield make_conninfo("", **params), proc.pid
    finally:
        proc.stdin.close()  # asks the child to stop
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
