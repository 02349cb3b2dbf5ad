"""An app served by ``gunicorn --preload`` in real processes, for the deployment tests.

The app is loaded in gunicorn's master before it forks its workers, as in production
with ``--preload`` (and as uWSGI does by default), so a pool opened at import would be
condemned in the workers. gunicorn gets a socket this process bound (no port race;
requests wait in its backlog until a worker accepts them), and is stopped with
SIGTERM to its whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from _docs import ROOT, blocks_of

#: How long gunicorn may take to stop after SIGTERM.
STOP_TIMEOUT = 30

#: gunicorn's worker class for ASGI apps: the maintained package's (``uvicorn.workers``
#: is deprecated).
UVICORN_WORKER = "uvicorn_worker.UvicornWorker"


@contextlib.contextmanager
def gunicorn(dsn: str, log: Path, *options: str) -> Iterator[str]:
    """Serve ``gunicorn --preload`` `options` (ending with ``module:app``) on `dsn`; its URL.

    On leaving, the server must stop cleanly (exit 0) and its log hold no traceback,
    deprecation warning or unclosed store.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    port, fd = sock.getsockname()[1], sock.fileno()
    argv = [
        *(sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"),
        *("--bind", f"fd://{fd}", "--graceful-timeout", "10", *options),
    ]
    # Deprecations shown, so that the log check catches them (a deprecated worker class).
    env = {
        **os.environ,
        "SESSIONSTORE_DSN": dsn,
        "DATABASE_URL": dsn,  # what the docs' snippets read
        "PYTHONWARNINGS": "default::DeprecationWarning",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            pass_fds=[fd],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sock.close()  # gunicorn holds its own copy
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
            raise AssertionError(f"gunicorn ignored SIGTERM:\n{log.read_text()}") from None
    output = log.read_text(errors="replace")
    assert code == 0, output
    for bad in ("Traceback", "Warning", "ForkedProcessError", "without close()"):
        assert bad not in output, output


def docs_set_up(page: str, directory: Path) -> str:
    """Write the first Python block of docs/`page` (its set-up) as a module; its name."""
    setup = blocks_of(ROOT / "docs" / page)[0]
    assert setup.marker is None, setup  # runs as written
    (directory / "docs_set_up.py").write_text(setup.code)
    return "docs_set_up"
