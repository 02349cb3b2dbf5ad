"""Serve an app under ``gunicorn --preload`` with uvicorn workers, as a deployment does.

The app module is imported once in gunicorn's master, which then forks its workers:
whatever the module opened at import would be shared by every process. The server
runs with warnings as errors, and what it wrote to stderr is checked when it stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from _docs import ROOT, blocks_of
from _http import Client

#: The uvicorn worker class: the maintained package (``uvicorn.workers`` is deprecated).
WORKER = "uvicorn_worker.UvicornWorker"


def serve_docs_set_up(
    page: str, dsn: str, directory: Path
) -> contextlib.AbstractContextManager[str]:
    """Serve the set-up block (the first Python block) of docs/`page` as written."""
    [first, *_] = blocks_of(ROOT / "docs" / page)
    (directory / "docs_set_up.py").write_text(first.code, encoding="utf-8")
    return gunicorn("docs_set_up:app", dsn, pythonpath=str(directory))


@contextlib.contextmanager
def gunicorn(app: str, dsn: str, *, workers: int = 2, pythonpath: str = "") -> Iterator[str]:
    """Serve `app` (``module:attribute``) with ``$SESSIONSTORE_DSN`` set to `dsn`.

    `pythonpath` is a directory to import the app's module from.

    Yields:
        The server's URL; on exit the server is stopped and its log checked for
        warnings and tracebacks.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SESSIONSTORE_DSN": dsn, "PYTHONWARNINGS": "error"}
    env = {key: value for key, value in env.items() if not key.startswith("PYTEST_")}
    command = [
        sys.executable, "-m", "gunicorn", "--preload", "-k", WORKER, "-w", str(workers),
        "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10",
        *(["--pythonpath", pythonpath] if pythonpath else []), app,
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not _answers(url):
                assert server.poll() is None, _read(log)
                assert time.monotonic() < deadline, _read(log)
                time.sleep(0.1)
            yield url
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        output = _read(log)
    assert server.returncode == 0, output
    for bad in ("Warning", "Traceback", "Error", "Exception"):
        assert bad not in output, output


def _answers(url: str) -> bool:
    """Whether the server answers HTTP at all (a 404 will do)."""
    try:
        Client(url).get("/-/ready")
    except OSError:
        return False
    return True


def _read(log: IO[str]) -> str:
    log.seek(0)
    return log.read()
