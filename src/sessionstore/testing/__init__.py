"""Throw-away PostgreSQL servers, standbys and a TCP proxy for tests (docs/testing.md).

The pytest plugin (`sessionstore.testing.plugin`) is registered automatically.
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
