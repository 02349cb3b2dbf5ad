"""After `os.fork`, stores whose pool was open refuse to work in the child (docs/usage.md).

Each such store gets, in the child only, a stand-in pool that raises
`ForkedProcessError` on use, so the hot path needs no per-call check.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from types import MethodType
from typing import Any, cast

from .errors import ForkedProcessError

#: What each store asked to run in a forked child, by store; weak, so a store can go away.
_hooks: weakref.WeakKeyDictionary[Any, Callable[[Any, Any], None]] = weakref.WeakKeyDictionary()


class ForkedPool:
    """Stands in for a pool inherited through `os.fork`; every use raises."""

    #: Read by the stores' batchers; a call then gets as far as `connection`, which raises.
    max_size = 1
    timeout = 30.0
    #: Never "closed": a store forked again keeps its stand-in.
    closed = False

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid

    def connection(self, *args: Any, **kwargs: Any) -> Any:
        """Raise `ForkedProcessError`: the pool's connections belong to the parent."""
        raise ForkedProcessError(
            f"this store was created in process {self.parent_pid} and cannot be used "
            f"after os.fork() (process {os.getpid()}); create a new pool and store in "
            "the child"
        )


def track(hook: Callable[[Any], None]) -> None:
    """Have the bound method `hook` called with a `ForkedPool` in a forked child (held weakly)."""
    # Not a WeakMethod: its callback can run at interpreter exit after the WeakMethod
    # itself is gone, and print an "Exception ignored" traceback.
    method = cast("MethodType", hook)
    _hooks[method.__self__] = method.__func__


def _after_fork_in_child() -> None:
    stand_in = ForkedPool(os.getppid())
    for owner, hook in list(_hooks.items()):
        hook(owner, stand_in)


os.register_at_fork(after_in_child=_after_fork_in_child)
