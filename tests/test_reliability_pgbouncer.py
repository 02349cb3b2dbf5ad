"""The store behind PgBouncer in transaction pooling mode (Debian's ``pgbouncer``).

The suite starts PgBouncer itself on loopback, in front of the test server, as an
unprivileged account when run as root (PgBouncer refuses to run as root). Without
PgBouncer installed these tests fail, saying how to install it: they never skip.

What docs/scaling.md recommends, and what is tested here:

- PgBouncer >= 1.21 with ``max_prepared_statements`` > 0 handles protocol-level
  prepared statements; older ones need psycopg's ``prepare_threshold=None`` in the
  pool's ``kwargs``. Without either, the store fails as soon as psycopg prepares
  (after 5 executions of a statement) and two clients meet on one server connection.
- Session-level advisory locks (the purge lock) don't survive transaction pooling:
  run the cleanup on a direct connection (or a session-pooled one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _support import Both, in_, insert_expired, new_token, wait_until
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, DatabaseError, Store
from sessionstore._sql import advisory_key
from sessionstore.cleanup import NoCleanup, TaskCleanup, ThreadCleanup
from sessionstore.testing import PostgresServer

#: The first PgBouncer that tracks protocol-level prepared statements in transaction mode.
PREPARED_STATEMENTS_SINCE = (1, 21)
INSTALL_HINT = (
    "PgBouncer is needed by these tests and was not found (looked for `pgbouncer` on "
    "PATH and in /usr/sbin). Install it: `apt-get install -y pgbouncer` (Debian/Ubuntu; "
    ".ci/run does this), `brew install pgbouncer` (macOS)."
)


def find_pgbouncer() -> str:
    """The pgbouncer executable; fails the test (never skips) when there is none."""
    exe = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)),
        None,
    )
    if exe is None:
        pytest.fail(INSTALL_HINT)
    return exe


def pgbouncer_version(exe: str) -> tuple[int, int, int]:
    out = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    assert match is not None, f"unexpected `pgbouncer --version` output: {out!r}"
    return int(match[1]), int(match[2]), int(match[3] or 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgBouncer:
    """One PgBouncer process in front of a server, configured by keyword settings."""

    def __init__(self, server: PostgresServer, **settings: Any) -> None:
        self.exe = find_pgbouncer()
        self.version = pgbouncer_version(self.exe)
        self.server = server
        self.settings = settings
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def supports_prepared_statements(self) -> bool:
        return self.version[:2] >= PREPARED_STATEMENTS_SINCE

    def recommended_pool_kwargs(self) -> dict[str, Any]:
        """Connection kwargs for a pool through this PgBouncer, as the docs recommend."""
        if self.supports_prepared_statements:
            return {"autocommit": True}
        return {"autocommit": True, "prepare_threshold": None}

    def dsn(self, dsn: str) -> str:
        """A DSN of the server rewritten to go through PgBouncer."""
        params = conninfo_to_dict(dsn)
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo("", **params)

    def log(self) -> str:
        assert self._dir is not None
        try:
            return (self._dir / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return "(no log)"

    def start(self) -> PgBouncer:
        self._dir = tmp = Path(tempfile.mkdtemp(prefix="sessionstore-pgbouncer-", dir="/tmp"))
        account = None
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    account = pwd.getpwnam(name)
                    break
            assert account is not None, "no 'postgres' or 'nobody' account to run PgBouncer as"
        self.port = free_port()
        password = (self.server.password or "").replace('"', '""')
        (tmp / "userlist.txt").write_text(f'"{self.server.user}" "{password}"\n')
        settings: dict[str, Any] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": tmp / "userlist.txt",
            "pool_mode": "transaction",
            "default_pool_size": 4,
            "max_client_conn": 200,
            "logfile": tmp / "pgbouncer.log",
            "pidfile": tmp / "pgbouncer.pid",
            **self.settings,
        }
        server_host = "127.0.0.1" if self.server.host == "localhost" else self.server.host
        ini = (
            "[databases]\n"
            f"* = host={server_host} port={self.server.port}\n"
            "[pgbouncer]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        (tmp / "pgbouncer.ini").write_text(ini)
        kwargs: dict[str, Any] = {}
        if account is not None:
            for path in (tmp, *tmp.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self._proc = subprocess.Popen(
            [self.exe, str(tmp / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            **kwargs,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"PgBouncer did not start; its log:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@pytest.fixture
def pgbouncer(
    sessionstore_server: PostgresServer,
) -> Iterator[Callable[..., PgBouncer]]:
    """Start PgBouncers in front of the test server: ``pgbouncer(**ini_settings)``."""
    started: list[PgBouncer] = []

    def start(**settings: Any) -> PgBouncer:
        bouncer = PgBouncer(sessionstore_server, **settings)
        if bouncer.supports_prepared_statements and "max_prepared_statements" not in settings:
            bouncer.settings["max_prepared_statements"] = 100  # what the docs recommend
        started.append(bouncer.start())
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()


@contextlib.asynccontextmanager
async def open_store(kind: str, dsn: str, kwargs: dict[str, Any], size: int) -> AsyncIterator[Both]:
    if kind == "sync":
        with ConnectionPool(dsn, min_size=size, max_size=size, kwargs=kwargs) as pool:
            pool.wait()
            yield Both(Store(pool, cleanup=NoCleanup()))
    else:
        async with AsyncConnectionPool(dsn, min_size=size, max_size=size, kwargs=kwargs) as apool:
            await apool.wait()
            yield Both(AsyncStore(apool, cleanup=NoCleanup()))


def test_missing_pgbouncer_fails_the_tests_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y pgbouncer"):
        find_pgbouncer()


def test_pgbouncer_is_installed_and_its_version_known() -> None:
    version = pgbouncer_version(find_pgbouncer())
    assert version >= (1, 12, 0)  # Debian 11's; older ones are out of support


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_store_works_through_pgbouncer_in_transaction_mode(
    kind: str,
    pgbouncer: Callable[..., PgBouncer],
    sessionstore_dsn: str,
    db: psycopg.Connection[Any],
) -> None:
    """commit/find/delete/all/iter_all/purge, many times over (psycopg prepares after 5)."""
    bouncer = pgbouncer(default_pool_size=2)
    dsn = bouncer.dsn(sessionstore_dsn)
    async with open_store(kind, dsn, bouncer.recommended_pool_kwargs(), size=4) as store:
        tokens = [new_token() for _ in range(4)]
        for round_ in range(12):
            for token in tokens:
                value = b"round %d" % round_
                await store.commit(token, value, in_(60))
                assert await store.find(token) == value
            assert await store.all() == {t: b"round %d" % round_ for t in tokens}
            assert await store.find(new_token()) is None
        # A server-side cursor lives in one transaction: PgBouncer keeps it on one
        # server connection.
        assert await store.walk(batch_size=3) == await store.all()
        await store.delete(tokens[0])
        assert await store.find(tokens[0]) is None
        await store.commit(new_token(), b"old", in_(-60))
        insert_expired(db, 20)
        assert await store.purge_expired(batch_size=7) == 21
        assert await store.purge_expired() == 0
        assert sorted(await store.all()) == sorted(tokens[1:])


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_concurrent_load_through_pgbouncer(
    kind: str, pgbouncer: Callable[..., PgBouncer], sessionstore_dsn: str
) -> None:
    """Eight workers on four client connections share two server connections."""
    bouncer = pgbouncer(default_pool_size=2)
    dsn = bouncer.dsn(sessionstore_dsn)
    errors: list[BaseException] = []
    async with open_store(kind, dsn, bouncer.recommended_pool_kwargs(), size=4) as store:

        def work_sync() -> None:
            sync_store = store.store
            assert isinstance(sync_store, Store)
            token = new_token()
            for n in range(50):
                try:
                    sync_store.commit(token, b"%d" % n, in_(60))
                    assert sync_store.find(token) == b"%d" % n
                except Exception as exc:  # collected and asserted below
                    errors.append(exc)

        async def work_async() -> None:
            token = new_token()
            for n in range(50):
                try:
                    await store.commit(token, b"%d" % n, in_(60))
                    assert await store.find(token) == b"%d" % n
                except Exception as exc:  # collected and asserted below
                    errors.append(exc)

        if kind == "sync":
            threads = [threading.Thread(target=work_sync) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        else:
            await asyncio.gather(*(work_async() for _ in range(8)))
    assert errors == []


def test_without_the_setting_prepared_statements_break(
    pgbouncer: Callable[..., PgBouncer], sessionstore_dsn: str
) -> None:
    """Why the setting matters: two clients meet on one server connection."""
    # One server connection, and (on PgBouncer >= 1.21) its statement tracking off.
    version = pgbouncer_version(find_pgbouncer())
    settings: dict[str, Any] = {"default_pool_size": 1}
    if version[:2] >= PREPARED_STATEMENTS_SINCE:
        settings["max_prepared_statements"] = 0
    dsn = pgbouncer(**settings).dsn(sessionstore_dsn)
    token = new_token()
    with (
        ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as first,
        ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as second,
    ):
        a = Store(first, cleanup=NoCleanup())
        b = Store(second, cleanup=NoCleanup())
        for _ in range(10):  # psycopg prepares on the server connection: "_pg3_0"
            assert a.find(token) is None
        failures: list[DatabaseError] = []
        for _ in range(10):  # ...and so does the second client, on the same one
            try:
                b.find(token)
            except DatabaseError as exc:
                failures.append(exc)
                break
    assert failures, "the second client's prepared statement did not collide"
    assert failures[0].sqlstate in {"42P05", "26000"}  # duplicate / unknown statement


def test_session_advisory_locks_do_not_survive_transaction_pooling(
    pgbouncer: Callable[..., PgBouncer], sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Why the cleanup should not go through transaction pooling.

    The purge lock is a session-level advisory lock. Through PgBouncer the lock and
    the unlock can run on different server connections: the unlock fails, and the
    lock stays with a server connection that no client owns, so purges that land
    on other server connections skip until PgBouncer closes it.
    """
    bouncer = pgbouncer(default_pool_size=2)
    dsn = bouncer.dsn(sessionstore_dsn)
    key = advisory_key("purge", '"sessions"')
    kwargs = bouncer.recommended_pool_kwargs()
    with (
        psycopg.connect(dsn, **kwargs) as purger,
        psycopg.connect(dsn, **{**kwargs, "autocommit": False}) as other,
    ):
        locked = purger.execute("SELECT pg_backend_pid(), pg_try_advisory_lock(%s)", (key,))
        lock_pid, taken = locked.fetchone() or (None, None)
        assert taken is True
        # Another client's transaction takes that server connection meanwhile (PgBouncer
        # hands out the most recently used one first)...
        busy = other.execute("SELECT pg_backend_pid()").fetchone()
        assert busy == (lock_pid,)
        # ...so the unlock runs on the other server connection, where there is no lock.
        unlocked = purger.execute("SELECT pg_backend_pid(), pg_advisory_unlock(%s)", (key,))
        unlock_pid, released = unlocked.fetchone() or (None, None)
        other.rollback()
    assert unlock_pid != lock_pid
    assert released is False
    held = db.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchall()
    assert held == [(lock_pid,)]  # leaked with a server connection nobody owns


def test_cleanup_on_a_direct_pool_beside_traffic_through_pgbouncer(
    pgbouncer: Callable[..., PgBouncer], sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """The recommended setup: app traffic through PgBouncer, cleanup on a direct pool."""
    bouncer = pgbouncer(default_pool_size=2)
    insert_expired(db, 500)
    cleanup = ThreadCleanup(interval=0.05, run_on_start=True)
    with (
        ConnectionPool(
            bouncer.dsn(sessionstore_dsn), min_size=4, kwargs=bouncer.recommended_pool_kwargs()
        ) as app_pool,
        ConnectionPool(sessionstore_dsn, min_size=1, max_size=1) as direct_pool,
    ):
        app = Store(app_pool, cleanup=NoCleanup())
        with Store(direct_pool, cleanup=cleanup):
            token = new_token()
            for n in range(30):
                app.commit(token, b"%d" % n, in_(60))
                app.commit(new_token(), b"expired", in_(-60))
                assert app.find(token) == b"%d" % n
            wait_until(lambda: app.all() == {token: b"29"} and cleanup.stats.runs >= 2)
        assert cleanup.stats.errors == 0
    wait_until(
        lambda: not db.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'").fetchall()
    )


async def test_cleanup_from_several_stores_through_transaction_pooling_keeps_going(
    pgbouncer: Callable[..., PgBouncer], sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Thread and task cleanups of four stores, all through PgBouncer, round after round.

    Each purge batch takes the table's purge lock for its own transaction only, so
    however PgBouncer shuffles server connections no lock outlives its statement:
    expired rows keep being deleted, each exactly once, and no lock is left behind.
    """
    bouncer = pgbouncer(default_pool_size=2)
    dsn = bouncer.dsn(sessionstore_dsn)
    kwargs = bouncer.recommended_pool_kwargs()
    waves, per_wave = 25, 100
    threads = [ThreadCleanup(interval=0.02) for _ in range(2)]
    tasks = [TaskCleanup(interval=0.02) for _ in range(2)]
    stop_traffic = threading.Event()
    live = {new_token(): b"live %d" % n for n in range(20)}

    def traffic(store: Store) -> None:
        while not stop_traffic.is_set():
            for token, data in live.items():
                store.commit(token, data, in_(600))
                assert store.find(token) == data

    def expired_left() -> int:
        row = db.execute("SELECT count(*) FROM sessions WHERE expiry < now()").fetchone()
        assert row is not None
        return int(row[0])

    async with contextlib.AsyncExitStack() as stack:
        sync_pools = [
            stack.enter_context(ConnectionPool(dsn, min_size=1, max_size=2, kwargs=kwargs))
            for _ in range(3)
        ]
        async_pools = [
            await stack.enter_async_context(
                AsyncConnectionPool(dsn, min_size=1, max_size=2, kwargs=kwargs)
            )
            for _ in range(2)
        ]
        for pool, cleanup in zip(sync_pools, threads, strict=False):
            stack.enter_context(Store(pool, cleanup=cleanup, purge_batch_size=17))
        for apool, task in zip(async_pools, tasks, strict=True):
            await stack.enter_async_context(AsyncStore(apool, cleanup=task, purge_batch_size=17))
        app = Store(sync_pools[2], cleanup=NoCleanup())
        app_thread = threading.Thread(target=traffic, args=(app,))
        app_thread.start()
        try:
            for _ in range(waves):
                insert_expired(db, per_wave)
                for _ in range(1000):  # bounded: 10 s a wave at most
                    if expired_left() == 0:
                        break
                    await asyncio.sleep(0.01)
                assert expired_left() == 0
        finally:
            stop_traffic.set()
            await asyncio.to_thread(app_thread.join)
        assert app.all() == live  # no live session was purged
    everyone = [*threads, *tasks]
    assert [c.stats.errors for c in everyone] == [0, 0, 0, 0]
    assert sum(c.stats.rows_deleted for c in everyone) == waves * per_wave
    assert all(c.stats.runs > 0 for c in everyone)
    assert db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone() == (
        0,
    )
