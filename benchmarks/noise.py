"""What the machine did during a measurement: CPU stolen by the host, other processes'
load, and the CPU of this process, the server and helper processes (docs/performance.md#noise)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """The machine during one round, as shares of all its CPUs."""

    steal: float | None
    busy: float | None
    ours: float
    others: float | None = None

    def noisy(self, max_steal: float, max_others: float = 1.0) -> bool:
        """Whether the host stole more than `max_steal`, or others used more than `max_others`."""
        return (self.steal is not None and self.steal > max_steal) or (
            self.others is not None and self.others > max_others
        )


def _read(path: str) -> str:
    """The text of a /proc file, empty if it is gone."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/`pid`/stat after the command (state first), or None."""
    text = _read(f"/proc/{pid}/stat")
    return text[text.rindex(")") + 2 :].split() if text else None


def _on_cpu(pid: int) -> float | None:
    """Nanosecond-exact CPU seconds of `pid`'s live threads, from /proc/<pid>/task/*/schedstat."""
    try:
        tasks = [Path(f"/proc/{pid}/task/{t}/schedstat") for t in os.listdir(f"/proc/{pid}/task")]
        return sum(int(task.read_text().split()[0]) for task in tasks) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def process_cpu(pid: int) -> float | None:
    """CPU seconds of process `pid` and of its reaped children, or None if it is gone."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the command.
    own = _on_cpu(pid)
    own = (int(fields[11]) + int(fields[12])) / _TICK if own is None else own
    return own + (int(fields[13]) + int(fields[14])) / _TICK


def descendants(pid: int) -> list[int]:
    """The live descendants of process `pid`, from /proc/<pid>/task/*/children."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in threads:
            children = map(int, _read(f"/proc/{parent}/task/{tid}/children").split())
            new = [c for c in children if c not in found]
            found += new
            pending += new
    return found


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of process `pid` and all its descendants, alive or reaped."""
    total = process_cpu(pid)
    if total is None:
        return None
    return total + sum(process_cpu(child) or 0.0 for child in descendants(pid))


def postmaster_of(backend_pid: int) -> int | None:
    """The postmaster of a local PostgreSQL backend, or None if the server is not local."""
    fields = proc_stat(backend_pid)
    if fields is None or any(
        _read(f"/proc/{p}/comm") != "postgres\n" for p in (backend_pid, fields[1])
    ):
        return None
    return int(fields[1])


@dataclass(frozen=True)
class Snapshot:
    """CPU counters at one instant (see `Probe.snap`)."""

    cpu: tuple[int, int, int] | None
    wall: float
    ours: float
    server: float | None
    helpers: Mapping[str, float | None]
    wal: int | None = None


@dataclass(frozen=True)
class Usage:
    """What the machine did between two snapshots."""

    noise: Noise
    seconds: float
    client: float
    server: float | None
    helpers: Mapping[str, float | None] = field(default_factory=dict)
    wal_bytes: int | None = None


class Probe:
    """Takes `Snapshot` s of the machine, the server and helper processes, and the WAL
    position of the server that `wal` (a psycopg connection) is connected to."""

    def __init__(
        self, server_pid: int | None = None, helpers: Mapping[str, int] = {}, wal: Any = None
    ) -> None:
        self.server_pid = server_pid
        self.helpers = dict(helpers)
        self.wal = wal

    def snap(self) -> Snapshot:
        """The counters now, the WAL position first (its query is the slower part)."""
        lsn = None
        if self.wal is not None:
            high, low = (
                self.wal.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0].split("/")
            )
            lsn = int(high, 16) << 32 | int(low, 16)
        return Snapshot(
            wal=lsn,
            cpu=_cpu(),
            wall=time.perf_counter(),
            ours=time.process_time(),
            server=None if self.server_pid is None else tree_cpu(self.server_pid),
            helpers={name: tree_cpu(pid) for name, pid in self.helpers.items()},
        )

    @staticmethod
    def usage(start: Snapshot, end: Snapshot, child_cpu: float | None = None) -> Usage:
        """What happened between two snapshots (`child_cpu`: a child's doing the client's work)."""
        wall = end.wall - start.wall
        ours = end.ours - start.ours
        client = ours if child_cpu is None else child_cpu
        server = None if start.server is None or end.server is None else end.server - start.server
        helpers: dict[str, float | None] = {}
        for name, before in start.helpers.items():
            after = end.helpers.get(name)
            helpers[name] = None if before is None or after is None else after - before
        share = ours / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        wal = None if start.wal is None or end.wal is None else end.wal - start.wal
        if start.cpu is None or end.cpu is None or end.cpu[2] == start.cpu[2]:
            return Usage(Noise(None, None, share), wall, client, server, helpers, wal)
        total = end.cpu[2] - start.cpu[2]
        steal = (end.cpu[0] - start.cpu[0]) / total
        busy = 1 - (end.cpu[1] - start.cpu[1]) / total
        known = (
            ours + (child_cpu or 0.0) + (server or 0.0) + sum(v or 0.0 for v in helpers.values())
        )
        others = max(0.0, busy - steal - known * _TICK / total)
        return Usage(Noise(steal, busy, share, others), wall, client, server, helpers, wal)
