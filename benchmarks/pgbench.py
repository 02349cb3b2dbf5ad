"""pgbench as the ceiling: the same statements from C, prepared, with no pool in between."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import resource
import shutil
import subprocess
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sessionstore import testing

from .measure import MIX_COMMIT_SHARE, Sample
from .noise import Probe
from .workload import LIFETIME, Table, token_sql

#: Seconds pgbench may take to connect its clients before the window would be short.
_CONNECT_MARGIN = 0.25

#: What a pgbench ``--version`` line looks like: ``pgbench (PostgreSQL) 18.6``.
_VERSION = re.compile(r"^pgbench \(PostgreSQL\) \d+")


@dataclasses.dataclass(frozen=True)
class PgbenchChoice:
    """The pgbench the benchmark runs, or why it runs none."""

    path: str | None
    version: str | None = None
    reason: str = ""


def pgbench_version(path: str) -> str | None:
    """Return the version line of the pgbench at ``path``, or None if it gives none."""
    return _probe(path)[0]


def _probe(path: str) -> tuple[str | None, str]:
    """Return (version line, "") or (None, what was wrong)."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return None, "not an executable file"
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"`--version` did not run: {exc}"
    line = next(iter(out.stdout.strip().splitlines()), "")
    if out.returncode != 0:
        said = next(iter((out.stderr.strip() or out.stdout.strip()).splitlines()), "")
        return None, f"`--version` exited with code {out.returncode}" + (said and f": {said}")
    if not _VERSION.search(line):
        return None, f"`--version` printed no version ({line[:80]!r})"
    return line, ""


def find_pgbench(
    explicit: str | None = None, server: testing.PostgresServer | None = None
) -> PgbenchChoice:
    """Find a pgbench that works, preferring the one of the server's own install."""
    tried: list[str] = []
    seen: set[str] = set()
    for path in _candidates(explicit, server, tried):
        if path in seen:
            continue
        seen.add(path)
        version, why = _probe(path)
        if version is not None:
            return PgbenchChoice(path, version)
        tried.append(f"{path} ({why})")
    return PgbenchChoice(None, reason="no usable pgbench (tried: " + "; ".join(tried) + ")")


def _candidates(
    explicit: str | None, server: testing.PostgresServer | None, tried: list[str]
) -> Iterator[str]:
    """Yield pgbench paths in `find_pgbench`'s order, noting in ``tried`` places without one."""
    if explicit:
        yield explicit
        return
    if server is not None and server.bindir is not None:
        own = testing.server_binary(server, "pgbench")
        if own is None:
            tried.append(f"{server.bindir / 'pgbench'} (not there)")
        else:
            yield str(own)
    try:
        bindir, _ = testing.find_postgres_bindir()
    except testing.PostgresNotFoundError:
        tried.append("no PostgreSQL binaries found")
    else:
        yield str(bindir / "pgbench")
    on_path = shutil.which("pgbench")
    if on_path is None:
        tried.append("no pgbench on PATH")
    else:
        yield on_path


class Pgbench:
    """Runs pgbench measurements against the benchmark's table."""

    def __init__(
        self, path: str, dsn: str, table: Table, rows: int, payload: bytes, workdir: Path
    ) -> None:
        self.path = path
        self.dsn = dsn
        self.rows = rows
        self.payload = payload
        self.workdir = workdir
        #: The DSN options `check` found pgbench's libpq does not know.
        self.dropped: list[str] = []
        lifetime = int(LIFETIME.total_seconds())
        q = table.quoted
        self.scripts = {
            "find": self._script(
                "find",
                "\\set id random(0, :rows - 1)\n"
                f"SELECT data FROM {q} WHERE token = {token_sql(':id')} "
                "AND current_timestamp < expiry;\n",
            ),
            "commit": self._script(
                "commit",
                "\\set id random(0, :rows - 1)\n"
                f"INSERT INTO {q} (token, data, expiry) VALUES ({token_sql(':id')}, :payload, "
                f"current_timestamp + interval '{lifetime} seconds') "
                "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, "
                "expiry = EXCLUDED.expiry;\n",
            ),
            "delete": self._script(
                "delete",
                "\\set id :base + :client_id + :clients * :i\n"
                "\\set i :i + 1\n"
                f"DELETE FROM {q} WHERE token = {token_sql(':id')};\n",
            ),
        }

    def check(self) -> list[str]:
        """Check that pgbench can connect, adapting the DSN to its libpq."""
        probe = self._script("probe", "SELECT 1;\n")
        self.dropped = dropped = list[str]()
        while True:
            try:
                self._run([self.path, "--no-vacuum", "--transactions=1", f"--file={probe}"], 0)
                return dropped
            except RuntimeError as exc:
                match = re.search(r'invalid connection option "([^"]+)"', str(exc))
                params = conninfo_to_dict(self.dsn)
                if match is None or match.group(1) not in params or len(dropped) > 20:
                    raise
                dropped.append(match.group(1))
                del params[match.group(1)]
                self.dsn = make_conninfo("", **params)

    def _script(self, name: str, text: str) -> Path:
        path = self.workdir / f"{name}.sql"
        path.write_text(text)
        return path

    def measure(
        self,
        op: str,
        clients: int,
        warmup: float,
        duration: float,
        delete_base: int = 0,
        delete_size: int = 0,
        dsn: str | None = None,
        probe: Probe | None = None,
    ) -> Sample:
        """Run pgbench for one measurement."""
        seconds = max(1, math.ceil(warmup + duration + _CONNECT_MARGIN))
        threads = max(1, min(clients, os.cpu_count() or 1))
        logdir = Path(tempfile.mkdtemp(prefix="log-", dir=self.workdir))
        cmd = [self.path, "--no-vacuum", "--protocol=prepared", "--log"]
        cmd += [f"--client={clients}", f"--jobs={threads}", f"--time={seconds}"]
        cmd += [f"--log-prefix={logdir / 'tx'}", f"--define=rows={self.rows}"]
        cmd += [f"--define=payload=\\x{self.payload.hex()}"]
        commit_weight = round(MIX_COMMIT_SHARE * 100)
        if op == "mix":
            cmd += [f"--file={self.scripts['find']}@{100 - commit_weight}"]
            cmd += [f"--file={self.scripts['commit']}@{commit_weight}"]
        elif op == "delete":
            cmd += [f"--file={self.scripts['delete']}", "--define=i=0"]
            cmd += [f"--define=base={delete_base}", f"--define=clients={clients}"]
        else:
            cmd.append(f"--file={self.scripts[op]}")
        try:
            before = None if probe is None else probe.snap()
            children = _children_cpu()
            self._run(cmd, seconds, dsn)
            spent = _children_cpu() - children
            after = None if probe is None else probe.snap()
            sample = self._parse(logdir, warmup, duration, clients, op, delete_size)
            if before is not None and after is not None:
                # The client's CPU is pgbench's, not this process's (which only waited).
                sample.usage = Probe.usage(before, after, child_cpu=spent)
            return sample
        finally:
            shutil.rmtree(logdir, ignore_errors=True)

    def _run(self, cmd: list[str], seconds: int, dsn: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if dsn is None:
            env["PGDATABASE"] = self.dsn
        else:  # another route to the server: without the options pgbench's libpq lacks
            params = conninfo_to_dict(dsn)
            for name in self.dropped:
                params.pop(name, None)
            env["PGDATABASE"] = make_conninfo("", **params)
        # Its own session: a terminal's Ctrl-C reaches us, and we stop pgbench.
        pipe, devnull = subprocess.PIPE, subprocess.DEVNULL
        proc = subprocess.Popen(
            cmd, stdout=pipe, stderr=pipe, stdin=devnull, env=env, start_new_session=True
        )
        try:
            _, err = proc.communicate(timeout=seconds + 60)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-10:])
            raise RuntimeError(f"pgbench exited with code {proc.returncode}:\n{tail}")

    @staticmethod
    def _parse(
        logdir: Path, warmup: float, duration: float, clients: int, op: str, delete_size: int
    ) -> Sample:
        ends: array[float] = array("d")
        lats: array[float] = array("d")
        last_txn = 0
        for path in logdir.iterdir():
            with path.open() as log:
                for line in log:
                    # client_id transaction_no time script_no time_epoch time_us
                    fields = line.split()
                    if len(fields) < 6:
                        continue
                    last_txn = max(last_txn, int(fields[1]))
                    ends.append(int(fields[4]) + int(fields[5]) / 1e6)
                    lats.append(int(fields[2]) / 1e6)
        if not ends:
            raise RuntimeError("pgbench logged no transactions")
        start = min(ends) + warmup
        end = min(start + duration, max(ends))
        latencies: array[float] = array(
            "d", (lat for t, lat in zip(ends, lats, strict=True) if start <= t <= end)
        )
        consumed = clients * last_txn if op == "delete" else 0
        exhausted = op == "delete" and consumed > delete_size
        seconds = max(0.0, end - start)
        return Sample(len(latencies), seconds, latencies, exhausted, consumed, cpu_ops=len(ends))


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (pgbench, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
