"""What else the machine did during a measurement: CPU stolen by the host, and load.

These machines are shared: for minutes at a time the host steals 10-40% of the cores
(the ``steal`` column of ``/proc/stat``, invisible in per-process accounting). A
benchmark records both figures for every round, leaves out the noisy rounds, and
prints them beside its results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
    """

    steal: float | None
    busy: float | None
    ours: float

    def noisy(self, threshold: float) -> bool:
        """Whether the host stole more than `threshold` of the CPU."""
        return self.steal is not None and self.steal > threshold

    def describe(self) -> str:
        """E.g. ``steal 1.2% busy 88% ours 41%``."""

        def pct(value: float | None) -> str:
            return "?" if value is None else f"{100 * value:.1f}%"

        return f"steal {pct(self.steal)} busy {pct(self.busy)} ours {pct(self.ours)}"


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
