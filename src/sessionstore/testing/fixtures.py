"""The fixtures of the sessionstore pytest plugin (docs/testing.md#fixtures)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.factories.noprocess import xdistify_dbname
from pytest_postgresql.janitor import DatabaseJanitor

from .._from_dsn import create_table
from ..cleanup import NoCleanup
from ..store import Store
from ..store_async import AsyncStore
from ._proxy import TcpProxy
from ._server import PostgresServer, ephemeral_postgres

#: The environment variable naming an existing server for the tests (docs/testing.md#which-server).
TEST_DSN_ENV = "SESSIONSTORE_TEST_DSN"

#: The pools of the ready-made stores: small, since each test has its own database.
_POOL_ARGS: dict[str, Any] = {"min_size": 1, "max_size": 4, "kwargs": {"autocommit": True}}


def create_sessions_table(
    host: str, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    """A pytest-postgresql loader: the table made as users make it (`Store.create_table`)."""
    dsn = psycopg.conninfo.make_conninfo(
        host=host, port=port, user=user, dbname=dbname, password=password
    )
    create_table(dsn)


@pytest.fixture(scope="session")
def sessionstore_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server of this test session (``SESSIONSTORE_TEST_DSN`` or ephemeral)."""
    with ephemeral_postgres(env_var=TEST_DSN_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def sessionstore_proc(sessionstore_server: PostgresServer) -> Iterator[NoopExecutor]:
    """pytest-postgresql's executor for the server, with the template database loaded."""
    server = sessionstore_server
    executor = NoopExecutor(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        options="",
        dbname=xdistify_dbname(f"sessionstore_test_{os.getpid()}"),
        maintenance_dbname=server.dbname,
    )
    janitor = DatabaseJanitor(
        user=executor.user,
        host=executor.host,
        port=executor.port,
        password=executor.password,
        dbname=executor.template_dbname,
        maintenance_dbname=executor.maintenance_dbname,
        as_template=True,
    )
    with janitor:
        janitor.load(create_sessions_table)
        yield executor


sessionstore_postgresql = factories.postgresql("sessionstore_proc")


@pytest.fixture
def sessionstore_dsn(sessionstore_postgresql: psycopg.Connection[Any]) -> str:
    """The DSN of this test's fresh database (it holds an empty sessions table)."""
    info = sessionstore_postgresql.info
    params = info.get_parameters()
    if info.password:
        params["password"] = info.password
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture
def session_store(sessionstore_dsn: str) -> Iterator[Store]:
    """A `Store` on this test's database, cleanup off; its pool is closed afterwards."""
    with (
        ConnectionPool(sessionstore_dsn, **_POOL_ARGS) as pool,
        Store(pool, cleanup=NoCleanup()) as store,
    ):
        yield store


@pytest_asyncio.fixture
async def async_session_store(sessionstore_dsn: str) -> AsyncIterator[AsyncStore]:
    """An `AsyncStore` on this test's database, cleanup off; its pool is closed afterwards."""
    async with (
        AsyncConnectionPool(sessionstore_dsn, **_POOL_ARGS) as pool,
        AsyncStore(pool, cleanup=NoCleanup()) as store,
    ):
        yield store


@pytest.fixture
def sessionstore_proxy(sessionstore_server: PostgresServer) -> Iterator[TcpProxy]:
    """A `TcpProxy` in front of the test server, its own for each test, in ``pass`` mode."""
    with TcpProxy(sessionstore_server.host, sessionstore_server.port) as proxy:
        yield proxy


@pytest.fixture
def sessionstore_proxy_dsn(sessionstore_proxy: TcpProxy, sessionstore_dsn: str) -> str:
    """The DSN of this test's database, through ``sessionstore_proxy``."""
    return sessionstore_proxy.dsn(sessionstore_dsn)
