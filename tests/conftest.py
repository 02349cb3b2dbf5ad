"""The suite's own fixtures; the database fixtures come from sessionstore's plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from _docs import all_blocks
from _support import Both
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore.cleanup import NoCleanup


@pytest.fixture(params=["sync", "async"])
def store(request: pytest.FixtureRequest) -> Both:
    """The test's store, once as `Store` and once as `AsyncStore`."""
    name = "session_store" if request.param == "sync" else "async_session_store"
    return Both(request.getfixturevalue(name))


@pytest.fixture(params=["sync", "async"])
async def open_store(request: pytest.FixtureRequest, sessionstore_dsn: str) -> AsyncIterator[Any]:
    """A factory of stores on the test's database: ``open_store(**options)``."""
    kwargs = {"autocommit": True}
    if request.param == "sync":
        with ConnectionPool(sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs) as pool:
            yield lambda **options: Both(Store(pool, cleanup=NoCleanup(), **options))
    else:
        async with AsyncConnectionPool(
            sessionstore_dsn, min_size=1, max_size=4, kwargs=kwargs
        ) as apool:
            yield lambda **options: Both(AsyncStore(apool, cleanup=NoCleanup(), **options))


@pytest.fixture
def db(sessionstore_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection to the test's database, to look behind the store."""
    with psycopg.connect(sessionstore_dsn, autocommit=True) as conn:
        yield conn


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After a run of the docs examples, say how many blocks ran and which are fragments."""
    reports = (report for group in terminalreporter.stats.values() for report in group)
    if not any(
        getattr(report, "nodeid", "").startswith("tests/test_docs_examples.py")
        for report in reports
    ):
        return
    blocks = all_blocks()
    fragments = [str(block) for block in blocks if block.fragment]
    terminalreporter.write_line(
        f"docs examples: {len(blocks) - len(fragments)} Python blocks run, "
        f"{len(fragments)} marked as fragments: {', '.join(fragments)}"
    )
