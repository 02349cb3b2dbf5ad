"""The sessionstore pytest plugin, registered for every install through ``pytest11``.

This module imports nothing optional, so a project that installed sessionstore
without the ``testing`` extra sees no error at all. When the extra is installed the
real fixtures (`sessionstore.testing.fixtures`) are registered; otherwise stand-ins
with the same names raise one clear error when a test asks for them.

Fixtures:
    sessionstore_server: (session) the `PostgresServer` used by the run: the
        ``SESSIONSTORE_TEST_DSN`` server if set, else a private ephemeral one.
    sessionstore_proc: (session) pytest-postgresql's `NoopExecutor` for it, with a
        template database holding the sessions table.
    sessionstore_postgresql: a psycopg connection to a fresh database cloned
        from that template for each test.
    sessionstore_dsn: the DSN of that per-test database.
    session_store: a ready `Store` on it (cleanup off; pool closed after).
    async_session_store: a ready `AsyncStore` on it (cleanup off; pool closed after).
    sessionstore_proxy: a started `TcpProxy` in front of the server, in ``pass``
        mode, closed after the test: cut, delay or black-hole the connection.
    sessionstore_proxy_dsn: the DSN of the test's database through that proxy.
"""

from __future__ import annotations

import importlib.util
import types
from collections.abc import Callable

import pytest

EXTRA_HINT = 'the sessionstore fixtures need the testing extra: pip install "sessionstore[testing]"'
_NEEDED = ("pytest_postgresql", "pytest_asyncio")
FIXTURE_NAMES = (
    "sessionstore_server",
    "sessionstore_proc",
    "sessionstore_postgresql",
    "sessionstore_dsn",
    "session_store",
    "async_session_store",
    "sessionstore_proxy",
    "sessionstore_proxy_dsn",
)


def _missing() -> list[str]:
    return [name for name in _NEEDED if importlib.util.find_spec(name) is None]


def _unavailable(missing: list[str]) -> types.ModuleType:
    """A plugin module of stand-in fixtures that explain what to install.

    A module, because pytest collects fixtures from a plugin's attributes by
    looking at its type's namespace for classes, which instance attributes miss.
    """
    message = f"{EXTRA_HINT} (missing: {', '.join(missing)})"
    plugin = types.ModuleType("sessionstore.testing._unavailable")
    for name in FIXTURE_NAMES:
        setattr(plugin, name, pytest.fixture(name=name)(_failing(message)))
    return plugin


def _failing(message: str) -> Callable[[], None]:
    def unavailable() -> None:
        pytest.fail(message, pytrace=False)

    return unavailable


def pytest_configure(config: pytest.Config) -> None:
    """Register the real fixtures, or the stand-ins that say what is missing."""
    missing = _missing()
    if missing:
        config.pluginmanager.register(_unavailable(missing), "sessionstore.fixtures")
    else:
        from . import fixtures

        config.pluginmanager.register(fixtures, "sessionstore.fixtures")
