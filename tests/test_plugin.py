"""The pytest plugin: its fixtures, and what a user without the testing extra sees."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
from _support import in_, new_token

from sessionstore import AsyncStore, Store
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import PostgresServer
from sessionstore.testing.plugin import FIXTURE_NAMES


def test_session_store_is_ready_on_an_empty_table(session_store: Store) -> None:
    assert isinstance(session_store.cleanup, NoCleanup)
    assert session_store.all() == {}


async def test_async_session_store_is_ready(async_session_store: AsyncStore) -> None:
    token = new_token()
    await async_session_store.commit(token, b"x", in_(60))
    assert await async_session_store.find(token) == b"x"


def test_each_test_gets_a_fresh_database(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    # Not the server's maintenance database: a clone of the template, empty table.
    row = db.execute("SELECT current_database(), count(*) FROM sessions").fetchone()
    assert row is not None
    name, count = row
    assert name.startswith("sessionstore_test_")
    assert count == 0


# None in sys.modules makes a module look not installed, to import and to find_spec.
HIDE_EXTRA = """
import sys

sys.modules["pytest_postgresql"] = sys.modules["pytest_asyncio"] = None
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_without_the_testing_extra_fixtures_explain_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            def test_plain():
                assert True

            def test_uses_store(session_store):
                pass
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # as if only sessionstore were installed
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            HIDE_EXTRA,
            "-p",
            "sessionstore.testing.plugin",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "1 passed, 1 error" in output, output
    assert 'pip install "sessionstore[testing]"' in output
    assert "missing: pytest_postgresql, pytest_asyncio" in output


# What docs/testing.md shows a user writing: an outage test of their own code, run by
# pytest in a project of its own, on this run's server (so no second initdb).
USER_OUTAGE_TESTS = """
import datetime as dt

import pytest
from psycopg_pool import ConnectionPool

from sessionstore import DatabaseError, Store
from sessionstore.cleanup import NoCleanup
from sessionstore.testing import TcpProxy


def later() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)


def open_store(dsn: str) -> tuple[ConnectionPool, Store]:
    pool = ConnectionPool(dsn, min_size=1, timeout=2, kwargs={"autocommit": True})
    return pool, Store(pool, cleanup=NoCleanup())


def test_the_network_is_cut(sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str):
    pool, store = open_store(sessionstore_proxy_dsn)
    with pool, store:
        store.commit("t", b"kept", later())
        sessionstore_proxy.reset()  # every connection, open or new, is reset
        with pytest.raises(DatabaseError):
            store.find("t")
    sessionstore_proxy.passthrough()  # the network is back
    pool, store = open_store(sessionstore_proxy_dsn)
    with pool, store:
        assert store.find("t") == b"kept"


def test_a_slow_network_is_only_slow(
    sessionstore_proxy: TcpProxy, sessionstore_proxy_dsn: str, session_store: Store
):
    session_store.commit("t", b"fast", later())
    sessionstore_proxy.delay(0.05)  # 50 ms each way
    pool, store = open_store(sessionstore_proxy_dsn)
    with pool, store:
        assert store.find("t") == b"fast"


def test_each_test_gets_its_own_proxy_in_pass_mode(sessionstore_proxy: TcpProxy):
    assert sessionstore_proxy.mode.name == "pass"
    assert sessionstore_proxy.stats.accepted == 0
"""


def test_a_users_outage_tests_with_the_proxy_fixtures(
    tmp_path: Path, sessionstore_server: PostgresServer
) -> None:
    (tmp_path / "test_outage.py").write_text(USER_OUTAGE_TESTS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["SESSIONSTORE_TEST_DSN"] = sessionstore_server.dsn
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "3 passed" in output, output


def test_the_proxy_fixtures_are_listed_among_the_plugins_fixtures() -> None:
    assert {"sessionstore_proxy", "sessionstore_proxy_dsn"} <= set(FIXTURE_NAMES)
