"""Throw-away PostgreSQL servers and the pytest plugin for testing with sessionstore.

`ephemeral_postgres` starts a private server (or uses a DSN from the environment)
for scripts, the CLI's ``check`` and test suites. The pytest plugin
(`sessionstore.testing.plugin`, registered automatically) gives any test suite the
``session_store`` and ``async_session_store`` fixtures, and ``sessionstore_proxy``
(a `TcpProxy` in front of the test server) to cut, delay or black-hole the database
connection in an outage test; it needs the ``testing`` extra:
``pip install "sessionstore[testing]"``. `streaming_standby` starts a streaming
standby of such a server (asynchronous or synchronous), for failover tests with a
libpq multi-host DSN (`multi_host_dsn`).
"""

from __future__ import annotations

from ._binaries import PostgresNotFoundError, find_postgres_bindir
from ._proxy import ModeName, ProxyMode, ProxyStats, TcpProxy
from ._server import PostgresServer, ephemeral_postgres, server_binary
from ._standby import Standby, multi_host_dsn, streaming_standby

__all__ = [
    "ModeName",
    "PostgresNotFoundError",
    "PostgresServer",
    "ProxyMode",
    "ProxyStats",
    "Standby",
    "TcpProxy",
    "ephemeral_postgres",
    "find_postgres_bindir",
    "multi_host_dsn",
    "server_binary",
    "streaming_standby",
]
