"""Store and AsyncStore are one code base: store.py is generated from store_async.py.

The generator's check is the real guard (private methods such as `_query` or `_drive`
can't drift, since they are written once); the surface tests below say what the
generated twin must look like to its users.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sessionstore import AsyncStore, Store
from sessionstore.cleanup import TaskCleanup, ThreadCleanup

ROOT = Path(__file__).resolve().parent.parent


def test_store_py_is_generated_from_store_async_py() -> None:
    """What CI checks too: regenerating store.py changes nothing."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "async_to_sync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (ROOT / "src/sessionstore/store.py").read_text().startswith("# WARNING: generated")


# AsyncStore's cleanup task needs a running loop, so it has open(); and its close
# is a coroutine, so it is called aclose(), as psycopg names its twins.
ASYNC_ONLY = {"open", "aclose"}
SYNC_ONLY = {"close"}


def public(cls: type) -> dict[str, object]:
    return {name: member for name, member in vars(cls).items() if not name.startswith("_")}


def test_same_public_names() -> None:
    assert set(public(Store)) - SYNC_ONLY == set(public(AsyncStore)) - ASYNC_ONLY


def test_same_order_signatures_and_docstrings() -> None:
    sync, async_ = public(Store), public(AsyncStore)
    shared = [name for name in sync if name in async_]
    assert shared == [name for name in async_ if name in sync]  # same order in the files
    for name in shared:
        s, a = sync[name], async_[name]
        if isinstance(s, property):
            assert isinstance(a, property), name
            continue
        assert callable(s), name
        assert callable(a), name
        if name == "iter_all":  # a context manager on both sides (async with / with)
            assert inspect.isasyncgenfunction(inspect.unwrap(a)), name
            assert inspect.isgeneratorfunction(inspect.unwrap(s)), name
            assert inspect.signature(s).parameters == inspect.signature(a).parameters, name
        else:
            assert inspect.iscoroutinefunction(a), f"AsyncStore.{name} must be a coroutine"
            assert inspect.signature(s) == inspect.signature(a), name
        # The sync twin keeps the summary; the full text is the async one's.
        doc_s, doc_a = inspect.getdoc(s) or "", inspect.getdoc(a) or ""
        assert doc_s == doc_a.split("\n\n")[0], name


def test_context_managers_start_and_stop_the_cleanup(sessionstore_dsn: str) -> None:
    cleanup = ThreadCleanup(interval=3600)
    with (
        ConnectionPool(sessionstore_dsn, min_size=1, kwargs={"autocommit": True}) as pool,
        Store(pool, cleanup=cleanup) as store,
    ):
        assert isinstance(store, Store)
        assert cleanup.running
    assert not cleanup.running


async def test_async_context_managers_start_and_stop_the_cleanup(sessionstore_dsn: str) -> None:
    cleanup = TaskCleanup(interval=3600)
    kwargs: dict[str, Any] = {"autocommit": True}
    async with AsyncConnectionPool(sessionstore_dsn, min_size=1, kwargs=kwargs) as pool:
        store = AsyncStore(pool, cleanup=cleanup)
        assert not cleanup.running  # a task needs the loop: it starts on entering
        async with store as entered:
            assert entered is store
            assert cleanup.running
        assert not cleanup.running
