"""Store and AsyncStore expose the same public surface (mirror, don't diverge)."""

from __future__ import annotations

import inspect

from sessionstore import AsyncStore, Store

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
        doc_s, doc_a = inspect.getdoc(s) or "", inspect.getdoc(a) or ""
        assert doc_s.replace("async ", "") == doc_a.replace("async ", ""), name


def test_context_managers_match() -> None:
    assert hasattr(Store, "__enter__")
    assert hasattr(Store, "__exit__")
    assert hasattr(AsyncStore, "__aenter__")
    assert hasattr(AsyncStore, "__aexit__")
