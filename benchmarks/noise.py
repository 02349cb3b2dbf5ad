"""What else the machine did during a measurement: CPU stolen by the host, and load."""

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
    """The machine during one round."""

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
    """Nanosecond-exact CPU seconds of `pid`'s live threads, from /proc/<pid>/task/*/schedstat."""
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
    """CPU seconds of process `pid` and of its reaped children, or None if it is gone."""
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
    """CPU seconds of process `pid` and all its descendants, alive or reaped."""
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
    """The postmaster of a local PostgreSQL backend, or None if the server is not local."""

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
    """What the machine did between two snapshots."""

    noise: Noise
    seconds: float
    client: float
    server: float | None
    helpers: Mapping[str, float | None] = field(default_factory=dict)


class Probe:
    """Takes `Snapshot` s of the machine, the server and helper processes."""

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
        """What happened between two snapshots."""
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
