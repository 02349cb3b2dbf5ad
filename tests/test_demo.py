"""``python -m sessionstore demo``, run as a real process and driven over HTTP.

Without a DSN the demo starts its own PostgreSQL; after SIGINT or SIGTERM it must exit 0
within a bound, with that server's process gone and its directory deleted.
"""

from __future__ import annotations

import http.cookiejar
import importlib
import os
import queue
import re
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from _support import table_rows

from sessionstore.demo import FRAMEWORKS
from sessionstore.manager import session_id

MESSAGE = "Hello from a session!"
START_TIMEOUT = 120.0  # initdb included; CI machines are slow and shared
STOP_TIMEOUT = 30.0


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    port: int = 0  # known once the demo printed its URLs
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Read stdout until a line matches; fail with everything seen if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern!r}; output:\n" + "".join(self.seen)
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, "demo exited; output:\n" + "".join(self.seen)
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait_until_serving(self) -> None:
        """Read the URLs the demo prints (learning its port) and its "Press Ctrl-C" line."""
        self.port = int(self.wait_for(r"http://127\.0\.0\.1:(\d+)/put ")[1])
        self.wait_for(re.escape(f"{self.url}/get "))
        self.wait_for("Press Ctrl-C to stop")

    def stop(self, sig: signal.Signals) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(STOP_TIMEOUT)
        return code, time.monotonic() - started


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture
def run_demo() -> Iterator[Any]:
    started: list[Demo] = []

    def run(*args: str) -> Demo:
        env = {k: v for k, v in os.environ.items() if k != "SESSIONSTORE_DSN"}
        proc = subprocess.Popen(
            # Port 0: the demo listens on a free port and prints it, so no race for one.
            [sys.executable, "-m", "sessionstore", "demo", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        demo = Demo(proc)
        assert proc.stdout is not None
        demo.reader = threading.Thread(target=_pump, args=(proc.stdout, demo.lines), daemon=True)
        demo.reader.start()
        started.append(demo)
        return demo

    yield run
    for demo in started:
        if demo.proc.poll() is None:
            demo.proc.kill()
        demo.proc.wait(10)
        if demo.reader is not None:
            demo.reader.join(10)
        assert demo.proc.stdout is not None
        demo.proc.stdout.close()


def get(opener: urllib.request.OpenerDirector, url: str) -> str:
    with opener.open(url, timeout=30) as response:
        assert response.status == 200
        body: str = response.read().decode()
        return body


def put_and_get(demo: Demo) -> http.cookiejar.CookieJar:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    assert "/put" in get(opener, demo.url + "/")
    get(opener, demo.url + "/put")
    assert get(opener, demo.url + "/get").strip() == MESSAGE
    # Another browser has no message.
    assert get(urllib.request.build_opener(), demo.url + "/get").strip() == ""
    return jar


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("framework", "sig"),
    [
        pytest.param("starlette", signal.SIGINT, id="starlette-SIGINT"),
        pytest.param("flask", signal.SIGINT, id="flask-SIGINT"),
        pytest.param("starlette", signal.SIGTERM, id="starlette-SIGTERM"),
        pytest.param("flask", signal.SIGTERM, id="flask-SIGTERM"),
        pytest.param("litestar", signal.SIGINT, id="litestar-SIGINT"),
        pytest.param("litestar", signal.SIGTERM, id="litestar-SIGTERM"),
        pytest.param("aiohttp", signal.SIGINT, id="aiohttp-SIGINT"),
        pytest.param("aiohttp", signal.SIGTERM, id="aiohttp-SIGTERM"),
        pytest.param("quart", signal.SIGINT, id="quart-SIGINT"),
        pytest.param("quart", signal.SIGTERM, id="quart-SIGTERM"),
        pytest.param("django", signal.SIGINT, id="django-SIGINT"),
        pytest.param("django", signal.SIGTERM, id="django-SIGTERM"),
    ],
)
def test_demo_on_a_throwaway_postgres(run_demo: Any, framework: str, sig: signal.Signals) -> None:
    args = () if framework == "starlette" else ("--framework", framework)
    demo = run_demo(*args)
    pid = int(demo.wait_for(r"PostgreSQL: .*, pid (\d+), on ")[1])
    datadir = Path(demo.wait_for(r"data:\s+(\S+) \(deleted on exit\)")[1])
    demo.wait_for(r'table:\s+"sessions" \(created\)')
    server = demo.wait_for(r"web server:\s+(\w+)")[1]
    assert server == {"flask": "werkzeug", "aiohttp": "aiohttp"}.get(framework, "uvicorn")
    demo.wait_until_serving()
    assert alive(pid)
    assert datadir.is_dir()

    jar = put_and_get(demo)
    [cookie] = list(jar)
    # SCS's tokens; Django's engine keeps Django's keys (32 of [a-z0-9]).
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}|[a-z0-9]{32}", cookie.value or "")

    code, took = demo.stop(sig)
    output = "".join(demo.seen) + "".join(iter(demo.lines.get, None))
    assert code == 0, output
    assert took < STOP_TIMEOUT
    assert "Traceback" not in output
    assert "stopped: nothing left running, temporary files deleted" in output
    assert not alive(pid)
    assert not datadir.parent.exists()


@pytest.mark.slow
def test_demo_with_a_dsn_uses_that_server(
    run_demo: Any, sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    demo = run_demo("--dsn", sessionstore_dsn, "--framework", "flask")
    demo.wait_for("the server given by --dsn")
    # The test database's table is SCS's three columns: the demo adds the owner column.
    demo.wait_for(r'table:\s+"sessions" \(owner column added\)')
    demo.wait_until_serving()
    jar = put_and_get(demo)
    [cookie] = list(jar)
    assert [row[0] for row in table_rows(db)] == [cookie.value]
    code, _ = demo.stop(signal.SIGINT)
    assert code == 0
    # A second run finds everything there.
    demo = run_demo("--dsn", sessionstore_dsn, "--framework", "flask")
    demo.wait_for(r'table:\s+"sessions" \(already there\)')
    demo.wait_until_serving()
    code, _ = demo.stop(signal.SIGINT)
    assert code == 0


def fetch(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, str]:
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def unprefixed(key: str) -> str:
    """A row's token: Litestar's store keeps its keys in a namespace."""
    return key.removeprefix("litestar/sessions:")


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_demo_logs_out_everywhere(
    run_demo: Any, framework: str, sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    demo = run_demo("--dsn", sessionstore_dsn, "--framework", framework)
    demo.wait_until_serving()
    jars = [http.cookiejar.CookieJar() for _ in range(2)]
    laptop, phone = (
        urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)) for jar in jars
    )
    for device in (laptop, phone):
        assert "/sessions" in get(device, demo.url + "/")
        get(device, demo.url + "/put")
        assert get(device, demo.url + "/login").startswith("Logged in as alice")
    mine, theirs = ([cookie.value or "" for cookie in jar] for jar in jars)
    assert len(mine) == len(theirs) == 1
    stored = db.execute("SELECT token, owner FROM sessions").fetchall()
    rows = {unprefixed(token): owner for token, owner in stored}
    assert rows == {mine[0]: "alice", theirs[0]: "alice"}
    for device in (laptop, phone):
        listing = get(device, demo.url + "/sessions")
        entries = [line for line in listing.splitlines() if "expires" in line]
        assert len(entries) == 2
        assert sum("(this one)" in line for line in entries) == 1
        # Each session by its listed id; no token, nor a prefix of one.
        assert {session_id(token) for token, _ in stored} == {line.split()[0] for line in entries}
        assert mine[0][:8] not in listing
        assert theirs[0][:8] not in listing
    assert "Logged out 1 other" in get(laptop, demo.url + "/logout-everywhere")
    assert get(laptop, demo.url + "/get").strip() == MESSAGE
    assert fetch(phone, demo.url + "/sessions")[0] == 403
    assert get(phone, demo.url + "/get").strip() == ""
    assert [unprefixed(row[0]) for row in table_rows(db)] == mine
    code, _ = demo.stop(signal.SIGINT)
    assert code == 0


@pytest.mark.slow
def test_demo_on_a_taken_port_fails_cleanly(run_demo: Any, sessionstore_dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sessionstore",
                "demo",
                "--dsn",
                sessionstore_dsn,
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert "sessionstore: error: cannot listen on 127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_demo_help_lists_its_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sessionstore", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option in (
        "--dsn",
        "--port",
        "--host",
        "--framework",
        "flask",
        "litestar",
        "aiohttp",
        "quart",
        "django",
    ):
        assert option in proc.stdout


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_examples_directory_runs_the_packaged_apps(framework: str) -> None:
    # The launchers in examples/ hold no copy of the app: they run the module the
    # demo serves.
    launcher = Path(__file__).resolve().parent.parent / "examples" / f"{framework}_app.py"
    namespace = runpy.run_path(str(launcher))  # not as __main__: nothing is served
    module = importlib.import_module(f"sessionstore.examples.{framework}_app")
    assert namespace["main"] is module.main


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_demo_stopped_while_starting_unwinds_cleanly(run_demo: Any, framework: str) -> None:
    demo = run_demo("--framework", framework)
    # Printed just before initdb runs, which takes seconds: the signal lands in start-up.
    demo.wait_for("starting a throw-away PostgreSQL")
    code, took = demo.stop(signal.SIGINT)
    output = "".join(demo.seen) + "".join(iter(demo.lines.get, None))
    assert code == 0, output
    assert took < STOP_TIMEOUT
    assert "SIGINT: stopped while starting" in output
    assert "stopped: nothing left running, temporary files deleted" in output
    assert "Traceback" not in output
    assert "Press Ctrl-C" not in output
