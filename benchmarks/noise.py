"""What else the machine did during a measurement: CPU stolen by the host, and load.

These machines are shared: for minutes at a time the host steals 10-40% of the cores
(the ``steal`` column of ``/proc/stat``, invisible in per-process accounting). A
benchmark records both figures for every round, leaves out the noisy rounds, and
prints them beside its results.

`Probe` takes the same figures plus CPU time by owner (this process, the PostgreSQL
server's process tree when the server is local, helper processes such as the network
proxy) at two instants; `Probe.usage` turns two snapshots into a `Usage`: the noise of
the interval and each owner's CPU seconds, which the throughput benchmark divides by
the operations counted to get CPU microseconds per operation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Clock ticks per second, the unit of /proc/stat and /proc/<pid>/stat.
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu() -> tuple[int, int, int] | None:
    """(steal, idle + iowait, total) jiffies of all CPUs, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[:8]] + [0] * (8 - len(fields[:8]))
    return values[7], values[3] + values[4], sum(values)


@dataclass(frozen=True)
class Noise:
    """The machine during one round.

    Attributes:
        steal: The share of CPU time the host stole (0-1), or None if unknown.
        busy: The share of CPU time anything ran (0-1), ours included, or None.
        ours: The share of the machine's CPU time this process used (0-1).
        others: The share of the machine's CPU time used by processes that are neither
            this one nor the ones a `Probe` watches (server, proxy, pgbench), or None
            when not measured: the load of other tenants of the machine.
    """

    steal: float | None
    busy: float | None
    ours: float
    others: float | None = None

    def noisy(self, threshold: float) -> bool:
        """Whether the host stole more than `threshold` of the CPU."""
        return self.steal is not None and self.steal > threshold

    def describe(self) -> str:
        """E.g. ``steal 1.2% busy 88% ours 41%``."""

        def pct(value: float | None) -> str:
            return "?" if value is None else f"{100 * value:.1f}%"

        text = f"steal {pct(self.steal)} busy {pct(self.busy)} ours {pct(self.ours)}"
        return text if self.others is None else f"{text} others {pct(self.others)}"


class Meter:
    """Measures `Noise` from its creation to `read`."""

    def __init__(self) -> None:
        self._start = _cpu()
        self._times = os.times()

    def read(self) -> Noise:
        """The noise since this meter was made."""
        end, times = _cpu(), os.times()
        ours_cpu = (times.user - self._times.user) + (times.system - self._times.system)
        wall = times.elapsed - self._times.elapsed
        ours = ours_cpu / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        if self._start is None or end is None or end[2] == self._start[2]:
            return Noise(None, None, ours)
        total = end[2] - self._start[2]
        steal = (end[0] - self._start[0]) / total
        busy = 1 - (end[1] - self._start[1]) / total
        return Noise(steal, busy, ours)


def _on_cpu(pid: int) -> float | None:
    """Nanosecond-exact CPU seconds of `pid`'s live threads, from /proc/<pid>/task/*/schedstat.

    /proc/<pid>/stat counts in clock ticks (10 ms): a backend serving a few hundred
    operations in a window would round to 0 or 1 tick. schedstat's first field is
    the time on CPU in nanoseconds; None where the kernel has no schedstat.
    """
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in threads:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None
    return total / 1e9


def process_cpu(pid: int) -> float | None:
    """CPU seconds of process `pid` and of its reaped children, or None if it is gone.

    /proc/<pid>/stat and schedstat are readable for other users' processes too (a
    server run by another account). Its second field, the command in parentheses,
    may hold spaces: the numbers are counted from the last ``)``.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the command.
    own = _on_cpu(pid)
    if own is None:
        own = (int(fields[11]) + int(fields[12])) / _TICK
    return own + (int(fields[13]) + int(fields[14])) / _TICK


def _children(pid: int) -> list[int]:
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in threads:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of process `pid` and all its descendants, alive or reaped.

    For PostgreSQL's postmaster this is the whole server: its backends, the
    background processes, and (through the postmaster's reaped-children times) the
    ones that exited. None if the process is gone.
    """
    total = process_cpu(pid)
    if total is None:
        return None
    pending = _children(pid)
    while pending:
        child = pending.pop()
        cpu = process_cpu(child)
        if cpu is not None:
            total += cpu
            pending += _children(child)
    return total


def postmaster_of(backend_pid: int) -> int | None:
    """The postmaster of a local PostgreSQL backend, or None if the server is not local.

    A backend is a child of the postmaster; both are named ``postgres``. A remote
    server's backend pid names no such process here (or an unrelated one, which the
    names rule out).
    """

    def comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    try:
        text = Path(f"/proc/{backend_pid}/stat").read_text()
    except OSError:
        return None
    parent = int(text[text.rindex(")") + 2 :].split()[1])
    if comm(backend_pid) != "postgres" or comm(parent) != "postgres":
        return None
    return parent


@dataclass(frozen=True)
class Snapshot:
    """CPU counters at one instant (see `Probe.snap`)."""

    cpu: tuple[int, int, int] | None
    wall: float
    ours: float
    server: float | None
    helpers: Mapping[str, float | None]


@dataclass(frozen=True)
class Usage:
    """What the machine did between two snapshots.

    Attributes:
        noise: Steal, busy, this process's share, and other processes' share.
        seconds: Wall-clock seconds between the snapshots.
        client: CPU seconds this process used.
        server: CPU seconds the server's processes used, or None if not local.
        helpers: CPU seconds of each watched helper process (None if it was gone).
    """

    noise: Noise
    seconds: float
    client: float
    server: float | None
    helpers: Mapping[str, float | None] = field(default_factory=dict)


class Probe:
    """Takes `Snapshot` s of the machine, the server and helper processes.

    Args:
        server_pid: The postmaster's pid when the server runs on this machine, else None.
        helpers: Names and pids of other processes of the benchmark (the proxy).
    """

    def __init__(self, server_pid: int | None = None, helpers: Mapping[str, int] = {}) -> None:
        self.server_pid = server_pid
        self.helpers = dict(helpers)

    def snap(self) -> Snapshot:
        """The counters now."""
        return Snapshot(
            cpu=_cpu(),
            wall=time.perf_counter(),
            ours=time.process_time(),
            server=None if self.server_pid is None else tree_cpu(self.server_pid),
            helpers={name: tree_cpu(pid) for name, pid in self.helpers.items()},
        )

    @staticmethod
    def usage(start: Snapshot, end: Snapshot, extra_cpu: float = 0.0) -> Usage:
        """What happened between two snapshots.

        Args:
            start: The earlier snapshot.
            end: The later one.
            extra_cpu: CPU seconds of other processes of the benchmark that the
                snapshots do not cover (pgbench, measured by getrusage), so that they
                do not count as other tenants' load.
        """
        wall = end.wall - start.wall
        client = end.ours - start.ours
        server = None if start.server is None or end.server is None else end.server - start.server
        helpers: dict[str, float | None] = {}
        for name, before in start.helpers.items():
            after = end.helpers.get(name)
            helpers[name] = None if before is None or after is None else after - before
        ours = client / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        if start.cpu is None or end.cpu is None or end.cpu[2] == start.cpu[2]:
            return Usage(Noise(None, None, ours), wall, client, server, helpers)
        total = end.cpu[2] - start.cpu[2]
        steal = (end.cpu[0] - start.cpu[0]) / total
        busy = 1 - (end.cpu[1] - start.cpu[1]) / total
        known = client + (server or 0.0) + sum(v or 0.0 for v in helpers.values()) + extra_cpu
        others = max(0.0, busy - steal - known * _TICK / total)
        return Usage(Noise(steal, busy, ours, others), wall, client, server, helpers)
