"""The unprivileged account throw-away servers run as when this process is root.

PostgreSQL refuses to run as root; without root there is no such account (None).
"""

from __future__ import annotations

import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


def _unprivileged_account() -> _Account | None:
    """Return the account to run PostgreSQL as, or None to run as the current user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise RuntimeError(
        "PostgreSQL refuses to run as root, and neither a 'postgres' nor a 'nobody' "
        "account exists to run it as; create one (useradd --system postgres)"
    )


def _run_as_kwargs(account: _Account | None) -> dict[str, Any]:
    """Return the `subprocess` keyword arguments that run a program as ``account``."""
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def _account_tmpdir(account: _Account | None, prefix: str) -> Path:
    """A new directory under ``/tmp`` owned by ``account``."""
    # Not under pytest's temporary directories: they are 0700, out of the account's reach.
    tmp_parent = "/tmp" if os.path.isdir("/tmp") else None
    tmpdir = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_parent))
    try:
        _give(account, tmpdir)
    except BaseException:
        os.rmdir(tmpdir)
        raise
    return tmpdir


def _give_tree(account: _Account, root: Path) -> None:
    """Make ``root`` and everything below it owned by ``account`` (symlinks themselves)."""
    for dirpath, dirs, files in os.walk(root):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in dirs + files)):
            os.chown(name, account.uid, account.gid, follow_symlinks=False)


def _give(account: _Account | None, path: Path) -> None:
    """Make ``path`` owned by ``account``; a no-op when there is none."""
    if account is not None:
        os.chown(path, account.uid, account.gid)
