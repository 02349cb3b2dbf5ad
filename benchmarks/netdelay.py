"""Network mode: a delaying TCP proxy, in a process of its own, in front of the server.

``python -m benchmarks --delay-ms D`` measures every contender, pgbench included,
through `sessionstore.testing.TcpProxy` in ``delay`` mode: each chunk is forwarded D
ms after it arrived, in each direction, so a round trip costs at least 2 D more, as
on a real network. The proxy runs in a child process (``python -m
benchmarks.netdelay``), never in a thread of the benchmark: it would share the GIL
and the CPU time with the contenders it delays. Its CPU time is measured like the
server's (`benchmarks.noise.Probe`) and printed with the run's noise.

The child prints its port on stdout once it listens and runs until its stdin closes,
so it also ends when the benchmark dies.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: Seconds to wait for the child to stop once asked before killing it.
_STOP_TIMEOUT = 10.0


class DelayProxy:
    """The proxy process in front of the server of `dsn`, adding `delay_ms` each way.

    Args:
        dsn: The server's DSN (its host must be a TCP address).
        delay_ms: Milliseconds added in each direction (0: a plain forwarder).

    Attributes:
        dsn: The DSN that connects through the proxy (once started).
        pid: The proxy process's pid (once started).
    """

    def __init__(self, dsn: str, delay_ms: float) -> None:
        params = conninfo_to_dict(dsn)
        host = str(params.get("hostaddr") or params.get("host") or "")
        if not host or host.startswith("/") or "," in host:
            raise ValueError(
                f"network mode needs the server's TCP address in the DSN, not {host or 'none'!r}"
            )
        self._params = params
        self._target = (host, int(params.get("port") or 5432))
        self.delay_ms = delay_ms
        self.dsn = ""
        self.pid = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> DelayProxy:
        """Start the proxy process and wait until it listens.

        Raises:
            RuntimeError: The process did not start listening.
        """
        root = Path(__file__).resolve().parents[1]
        self._proc = proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.netdelay",
                self._target[0],
                str(self._target[1]),
                str(self.delay_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the delaying proxy did not start (it said {line!r})")
        self.pid = proc.pid
        params = dict(self._params)
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=line)
        self.dsn = make_conninfo("", **params)
        return self

    def close(self) -> None:
        """Stop the proxy process (closing its stdin asks it to) and reap it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The child: run the proxy until stdin closes."""
    from sessionstore.testing import TcpProxy

    parser = argparse.ArgumentParser(prog="python -m benchmarks.netdelay")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("delay_ms", type=float)
    args = parser.parse_args(argv)
    with TcpProxy(args.host, args.port) as proxy:
        if args.delay_ms > 0:
            proxy.delay(args.delay_ms / 1000)
        print(proxy.port, flush=True)
        # A terminal's Ctrl-C reaches the whole process group: stop quietly then too.
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()  # until the benchmark closes it (or dies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
