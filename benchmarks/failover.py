"""Failover and crash benchmark: what callers of a `Store` see when the primary dies.

Run from the repository root::

    python -m benchmarks.failover                 # every scenario, 3 rounds each
    python -m benchmarks.failover --rounds 5 --scenarios sync,crash --json out.json

Each round starts fresh throw-away servers (durable: fsync and synchronous commit on),
runs a few threads that each commit new sessions (distinct tokens, a counter in the
data) through one `Store` on a `psycopg_pool.ConnectionPool`, and records every
*acknowledged* commit (``commit()`` returned without an exception). Then the primary's
postmaster is killed with ``SIGKILL``, and:

- ``async``: a streaming standby (asynchronous replication) is promoted;
- ``sync``: the same with synchronous replication (``synchronous_standby_names``,
  ``synchronous_commit=on``): a commit is acknowledged only once the standby has it;
- ``crash``: no standby; the same server is started again on its data directory
  (crash recovery).

With a standby the pool connects through a multi-host DSN (``host=127.0.0.1,127.0.0.1
port=p1,p2 target_session_attrs=read-write``), so it finds the promoted standby by
itself. The load goes on until every thread has committed again, and then every
acknowledged token is read back on the surviving server. Figures per round: the
errors callers saw (by type; all must be `sessionstore.DatabaseError`), seconds from
the kill until commits succeed again (the first acknowledged commit, kept by the
surviving server, that returned once the standby was promoted or the server restarted),
acknowledged commits lost, and the commit rate before the kill (what synchronous
replication costs).

The promotion follows the kill at once, as a failover manager with zero detection
delay would do it: add your manager's detection time to the figures. The tests in
``tests/test_reliability_failover.py`` run these same scenarios (`run_scenario`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from sessionstore import DatabaseError, Store
from sessionstore._from_dsn import create_table
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import (
    PostgresServer,
    ephemeral_postgres,
    multi_host_dsn,
    streaming_standby,
)

from .noise import Meter

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
    noise = Meter()
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
        steal=noise.read().steal,
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.failover",
        description="Errors, time to recover and acknowledged commits lost when the primary "
        "is killed: failover to an async or sync standby, or a restart without one.",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)} (default all)",
    )
    p.add_argument("--threads", type=int, default=THREADS, help=f"default {THREADS}")
    p.add_argument(
        "--pool-timeout", type=float, default=POOL_TIMEOUT, help=f"default {POOL_TIMEOUT} s"
    )
    p.add_argument(
        "--load-before",
        type=float,
        default=LOAD_BEFORE,
        help=f"seconds of load before the kill (default {LOAD_BEFORE})",
    )
    p.add_argument("--bindir", help="PostgreSQL binaries to use (default: search)")
    p.add_argument("--json", type=Path, help="also write the rounds to this JSON file")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the pool and store do")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table; return the exit status."""
    args = build_parser().parse_args(argv)
    # The pool and the store log every lost connection and failed reconnect: expected here.
    handler = logging.StreamHandler()
    handler.setLevel(logging.INFO if args.verbose else logging.ERROR)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or args.rounds < 1 or args.threads < 1:
        print(f"bad arguments: unknown scenarios {unknown}" if unknown else "bad arguments")
        return 2
    rows: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.UTC)
    for round_no in range(1, args.rounds + 1):
        for scenario in scenarios:  # interleaved: a noisy minute hits every scenario
            outcome = run_scenario(
                scenario,
                threads=args.threads,
                pool_timeout=args.pool_timeout,
                load_before=args.load_before,
                bindir=args.bindir,
            )
            row = {"round": round_no, **outcome.summary()}
            rows.append(row)
            print(
                f"round {round_no} {scenario:5} acknowledged {row['acknowledged']:5}  "
                f"errors {row['errors']} {row['error_kinds'] or ''}  "
                f"back in {row['recovery_s']} s  lost {row['lost']}  "
                f"{row['commits_per_s_before_kill']} commits/s before  "
                f"steal {row['steal_pct']}%",
                file=sys.stderr,
            )
    print(_table(rows, scenarios, args))
    if args.json is not None:
        document = {
            "command": "python -m benchmarks.failover " + " ".join(argv or sys.argv[1:]),
            "started": started.isoformat(timespec="seconds"),
            "threads": args.threads,
            "pool_timeout_s": args.pool_timeout,
            "rounds": rows,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    foreign = [r for r in rows if r["foreign_errors"]]
    unrecovered = [r for r in rows if r["recovery_s"] is None]
    return 1 if foreign or unrecovered else 0


def _table(rows: list[dict[str, Any]], scenarios: list[str], args: argparse.Namespace) -> str:
    lines = [
        f"{args.threads} threads committing, pool timeout {args.pool_timeout} s, "
        f"{args.rounds} round(s) per scenario",
        "",
        "| scenario | errors seen by callers | seconds until commits succeed again "
        "| acknowledged commits lost | commits/s before the kill |",
        "|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        mine = [r for r in rows if r["scenario"] == scenario]
        errors = ", ".join(str(r["errors"]) for r in mine)
        kinds: Counter[str] = Counter()
        for r in mine:
            kinds.update(r["error_kinds"])
        if kinds:
            errors += " (" + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) + ")"
        recovery = ", ".join(
            "-" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}" for r in mine
        )
        lost = ", ".join(f"{r['lost']} of {r['acknowledged']}" for r in mine)
        rates = sorted(r["commits_per_s_before_kill"] for r in mine)
        rate = f"{rates[len(rates) // 2]:,} (median; {rates[0]:,} - {rates[-1]:,})"
        lines.append(f"| {DESCRIPTIONS[scenario]} | {errors} | {recovery} | {lost} | {rate} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
