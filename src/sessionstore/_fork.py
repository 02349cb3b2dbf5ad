"""After `os.fork`, stores whose pool was open refuse to work in the child (docs/usage.md).

Each such store gets, in the child only, a stand-in pool that raises
`ForkedProcessError` on use, so the hot path needs no per-call check.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

from .errors import ForkedProcessError

#: What each store asked to run in a forked child; weak, so a store can go away.
_hooks: set[weakref.WeakMethod[Callable[[Any], None]]] = set()


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
    _hooks.add(weakref.WeakMethod(hook, _hooks.discard))


def _after_fork_in_child() -> None:
    stand_in = ForkedPool(os.getppid())
    for ref in list(_hooks):
        hook = ref()
        if hook is not None:
            hook(stand_in)


os.register_at_fork(after_in_child=_after_fork_in_child)
