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
