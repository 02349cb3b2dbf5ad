"""A plain-text progress bar on stderr, with no dependency."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Counts steps and shows how far along the run is: redrawn in place on a terminal,
    a line every tenth of the run elsewhere."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.started = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_tenth = -1
        self._drawn = 0

    def step(self, label: str = "") -> None:
        """Count one finished step and redraw."""
        self.done = min(self.total, self.done + 1)
        self.show(label)

    def show(self, label: str) -> None:
        """Show the bar with `label` (what is running now) without counting a step."""
        elapsed = time.monotonic() - self.started
        fraction = self.done / self.total
        filled = int(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        line = f"[{bar}] {self.done}/{self.total} {_clock(elapsed)} elapsed, "
        line += f"~{_clock(eta)} left  {label}"
        if self._tty:
            self.stream.write("\r" + line + " " * max(0, self._drawn - len(line)))
            self._drawn = len(line)
        elif int(fraction * 10) != self._last_tenth:
            self._last_tenth = int(fraction * 10)
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (on a terminal)."""
        if self._tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0
