"""The failover scenarios `test_reliability_failover.py` runs (kill -9 of the primary under load).

Each scenario starts fresh throw-away servers (durable), runs a few threads that
commit new sessions through one `Store` on a multi-host pool, records every
acknowledged commit, kills the primary's postmaster with ``SIGKILL`` and then
promotes a standby (``async``, ``sync``) or restarts the server (``crash``), and
reads every acknowledged token back. Figures measured with it are in
docs/reliability.md (it was ``python -m benchmarks.failover`` until commit 11364f7).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from benchmarks.noise import Probe
from sessionstore import DatabaseError, Store
from sessionstore._from_dsn import create_table
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import (
    PostgresServer,
    ephemeral_postgres,
    multi_host_dsn,
    streaming_standby,
)

SCENARIOS = ("async", "sync", "crash")
DESCRIPTIONS = {
    "async": "failover, asynchronous replication",
    "sync": "failover, synchronous replication",
    "crash": "kill -9, restart, no standby",
}
THREADS = 4
#: How long a caller waits for a connection; the outage is shorter, so most callers wait
#: instead of failing (a shorter timeout turns waiting into DatabaseError).
POOL_TIMEOUT = 5.0
LOAD_BEFORE = 1.0
LOAD_AFTER = 0.5
#: Only a real hang gets near this: it bounds every wait of a round.
DEADLINE = 60.0
#: A caller that just failed waits this long before its next commit (no busy loop).
ERROR_PAUSE = 0.01


@dataclass(frozen=True)
class Commit:
    """One acknowledged commit: ``commit()`` returned without an exception."""

    token: str
    data: bytes
    start: float
    end: float


@dataclass(frozen=True)
class Failure:
    """One commit that raised."""

    start: float
    end: float
    error: Exception


@dataclass
class Outcome:
    """What the callers saw in one round, and what the surviving server kept.

    Times are `time.monotonic` seconds: ``loaded`` is when the threads started,
    ``killed`` when the ``SIGKILL`` was sent, ``back`` when the promotion (or the
    restart) finished.
    """

    scenario: str
    loaded: float
    killed: float
    back: float
    commits: list[Commit]
    failures: list[Failure]
    #: Acknowledged commits the surviving server does not have (token, or other data).
    lost: list[Commit]
    #: Threads that committed at least once after ``back``.
    threads_recovered: int
    threads: int
    steal: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Exception]:
        """Every exception a caller got."""
        return [f.error for f in self.failures]

    @property
    def foreign_errors(self) -> list[Exception]:
        """Exceptions other than `DatabaseError` (there must be none)."""
        return [e for e in self.errors if not isinstance(e, DatabaseError)]

    @property
    def error_kinds(self) -> dict[str, int]:
        """Errors by type, with a DatabaseError's psycopg cause: ``DatabaseError(PoolTimeout)``."""
        kinds: Counter[str] = Counter()
        for error in self.errors:
            name = type(error).__name__
            if isinstance(error, DatabaseError) and error.__cause__ is not None:
                name = f"{name}({type(error.__cause__).__name__})"
            kinds[name] += 1
        return dict(kinds)

    @property
    def recovery(self) -> float | None:
        """Seconds from the kill until a commit succeeds on the new primary (or restarted server).

        That is the first acknowledged commit, kept by the surviving server, that
        returned once the promotion (or restart) had finished. Commits that return
        between the kill and then were answered by the dying server (its backends
        outlive the postmaster for a moment; see `sessionstore.testing.PostgresServer.crash`)
        and don't count. None if no commit succeeded (the store did not recover).
        """
        lost = {c.token for c in self.lost}
        ends = [c.end for c in self.commits if c.end >= self.back and c.token not in lost]
        return min(ends) - self.killed if ends else None

    @property
    def outage(self) -> float:
        """Seconds from the kill until the promotion (or restart) had finished."""
        return self.back - self.killed

    @property
    def rate_before_kill(self) -> float:
        """Acknowledged commits per second before the kill, all threads together."""
        done = sum(c.end < self.killed for c in self.commits)
        return done / (self.killed - self.loaded) if self.killed > self.loaded else 0.0

    @property
    def lost_after_back(self) -> list[Commit]:
        """Lost commits that started once the new primary was up (there must be none)."""
        return [c for c in self.lost if c.start >= self.back]

    def summary(self) -> dict[str, Any]:
        """The round's figures, for JSON and the table."""
        recovery = self.recovery
        return {
            "scenario": self.scenario,
            "acknowledged": len(self.commits),
            "acknowledged_before_kill": sum(c.end < self.killed for c in self.commits),
            "commits_per_s_before_kill": round(self.rate_before_kill),
            "errors": len(self.failures),
            "error_kinds": self.error_kinds,
            "foreign_errors": [repr(e) for e in self.foreign_errors],
            "outage_s": round(self.outage, 3),
            "recovery_s": None if recovery is None else round(recovery, 3),
            "lost": len(self.lost),
            "threads_recovered": f"{self.threads_recovered}/{self.threads}",
            "steal_pct": None if self.steal is None else round(100 * self.steal, 1),
            **self.extra,
        }


def run_scenario(
    scenario: str,
    *,
    threads: int = THREADS,
    pool_timeout: float = POOL_TIMEOUT,
    load_before: float = LOAD_BEFORE,
    load_after: float = LOAD_AFTER,
    bindir: str | os.PathLike[str] | None = None,
) -> Outcome:
    """Run one round of a scenario on fresh servers, and read back what was acknowledged.

    Args:
        scenario: ``"async"``, ``"sync"`` or ``"crash"`` (see the module's docstring).
        threads: Committing threads (and pool connections).
        pool_timeout: The pool's ``timeout``: how long a caller waits for a connection.
        load_before: Seconds of load before the kill.
        load_after: Seconds of load once every thread has committed again.
        bindir: PostgreSQL binaries, instead of `ephemeral_postgres`'s search.

    Returns:
        What happened.

    Raises:
        ValueError: Unknown scenario.
        TimeoutError: The store did not recover within `DEADLINE` seconds (a hang).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(ephemeral_postgres(env_var=None, durable=True, bindir=bindir))
        create_table(primary.dsn)
        phases: dict[str, float] = {}
        if scenario == "crash":
            survivor = primary

            def outage() -> None:
                primary.restart(crash=True)

        else:
            standby = stack.enter_context(
                streaming_standby(primary, synchronous=scenario == "sync")
            )
            survivor = standby.server

            def outage() -> None:
                start = time.monotonic()
                primary.crash()
                phases["kill_s"] = time.monotonic() - start
                standby.promote()
                phases["promote_s"] = time.monotonic() - start - phases["kill_s"]

        servers = [primary] if survivor is primary else [primary, survivor]
        outcome = _run_load(
            scenario,
            # connect_timeout bounds an attempt to a host that does not answer at all.
            dsn=multi_host_dsn(servers, connect_timeout=2),
            outage=outage,
            threads=threads,
            pool_timeout=pool_timeout,
            load_before=load_before,
            load_after=load_after,
        )
        outcome.lost = _lost(survivor, outcome.commits)
        outcome.extra.update((name, round(value, 3)) for name, value in phases.items())
        return outcome


def _run_load(
    scenario: str,
    *,
    dsn: str,
    outage: Callable[[], None],
    threads: int,
    pool_timeout: float,
    load_before: float,
    load_after: float,
) -> Outcome:
    stop = threading.Event()
    prefix = secrets.token_hex(4)
    commits: list[list[Commit]] = [[] for _ in range(threads)]
    failures: list[list[Failure]] = [[] for _ in range(threads)]
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    noise = Probe()
    noise_start = noise.snap()
    with ConnectionPool(
        dsn,
        min_size=threads,
        max_size=threads,
        timeout=pool_timeout,
        kwargs={"autocommit": True},
    ) as pool:
        pool.wait(timeout=DEADLINE)
        store = Store(pool, cleanup=NoCleanup())

        def work(index: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                token = f"failover-{prefix}-{index}-{n}"
                data = f"{index}:{n}".encode()
                start = time.monotonic()
                try:
                    store.commit(token, data, expiry)
                except Exception as exc:  # recorded; anything but DatabaseError is a bug
                    failures[index].append(Failure(start, time.monotonic(), exc))
                    time.sleep(ERROR_PAUSE)
                else:
                    commits[index].append(Commit(token, data, start, time.monotonic()))

        workers = [
            threading.Thread(target=work, args=(i,), name=f"failover-load-{i}")
            for i in range(threads)
        ]
        loaded = time.monotonic()
        for worker in workers:
            worker.start()
        try:
            time.sleep(load_before)
            # However slow the machine, every thread has a commit acknowledged before the
            # kill, so that every round measures something.
            _wait_for(lambda: all(commits), "no commit succeeded before the kill")
            killed = time.monotonic()
            outage()
            back = time.monotonic()
            deadline = back + DEADLINE

            def recovered() -> int:
                return sum(any(c.start >= back for c in mine) for mine in commits)

            while recovered() < threads and time.monotonic() < deadline:
                time.sleep(0.02)
            if recovered() == threads:
                time.sleep(load_after)
        finally:
            stop.set()
            for worker in workers:
                worker.join(DEADLINE)
        if any(worker.is_alive() for worker in workers):
            raise TimeoutError(f"a committing thread hung for more than {DEADLINE} s")
    return Outcome(
        scenario=scenario,
        loaded=loaded,
        killed=killed,
        back=back,
        commits=[c for mine in commits for c in mine],
        failures=[f for mine in failures for f in mine],
        lost=[],
        threads_recovered=recovered(),
        threads=threads,
        steal=Probe.usage(noise_start, noise.snap()).noise.steal,
    )


def _wait_for(predicate: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{failure} within {DEADLINE} s")
        time.sleep(0.02)


def _lost(server: PostgresServer, commits: Sequence[Commit]) -> list[Commit]:
    with psycopg.connect(server.dsn, autocommit=True, connect_timeout=5) as conn:
        stored: dict[str, bytes] = dict(
            conn.execute(
                "SELECT token, data FROM sessions WHERE token = ANY(%s)",
                ([c.token for c in commits],),
            ).fetchall()
        )
    return [c for c in commits if stored.get(c.token) != c.data]


# --------------------------------------------------------------------------- command line
