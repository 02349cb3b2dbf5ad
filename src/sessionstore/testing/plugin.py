"""The sessionstore pytest plugin, registered for every install through ``pytest11``.

It imports nothing optional: with the ``testing`` extra it registers the fixtures of
`sessionstore.testing.fixtures`, without it stand-ins that say what to install
(docs/testing.md).
"""

from __future__ import annotations

import importlib.util
import types

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


def _unavailable(missing: list[str]) -> types.ModuleType:
    """A plugin of stand-in fixtures that say what to install.

    A module: pytest finds a plugin's fixtures in its type's namespace for classes,
    which instance attributes miss.
    """
    message = f"{EXTRA_HINT} (missing: {', '.join(missing)})"
    plugin = types.ModuleType("sessionstore.testing._unavailable")
    for name in FIXTURE_NAMES:
        # A function of its own each: older pytest refuses to make one a fixture twice.
        def unavailable() -> None:
            pytest.fail(message, pytrace=False)

        setattr(plugin, name, pytest.fixture(name=name)(unavailable))
    return plugin


def pytest_configure(config: pytest.Config) -> None:
    """Register the real fixtures, or the stand-ins that say what is missing."""
    missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        config.pluginmanager.register(_unavailable(missing), "sessionstore.fixtures")
    else:
        from . import fixtures

        config.pluginmanager.register(fixtures, "sessionstore.fixtures")
