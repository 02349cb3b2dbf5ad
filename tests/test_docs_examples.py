"""Every Python block of README.md and docs/*.md runs, so an example cannot go stale.

Each block runs in a fresh interpreter under ``-W error`` against a fresh test database
holding the sessions table (given to it as ``dsn``, ``$DATABASE_URL`` and
``$SESSIONSTORE_DSN``); see `_docs` for the markers. A block passes when it exits 0 and
writes nothing to stderr: a warning printed at exit, an "Exception ignored" or a logged
"store was garbage-collected without close()" fails it too.

A block that defines ``test_*`` functions is a test module: it runs under pytest with
the sessionstore plugin, as a user's suite would. Fragments are not run; the run ends
with the count of both (conftest.py's summary).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _docs import ROOT, Block, all_blocks, markdown_files

from sessionstore.testing import PostgresServer

RUNNABLE = [block for block in all_blocks() if not block.fragment]
RUNNER = Path(__file__).with_name("_docs_runner.py")

#: Generous: a block takes about a second; this only bounds a hang.
TIMEOUT = 180


def child_env(dsn: str | None = None) -> dict[str, str]:
    """This environment without the outer pytest's variables, plus the database."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    if dsn is not None:
        env.update(DATABASE_URL=dsn, SESSIONSTORE_DSN=dsn)
    return env


def run_python(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with warnings as errors."""
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def module_name(block: Block) -> str:
    """The file a test-module block is written to, named after where the block is."""
    return "test_" + re.sub(r"\W", "_", str(block)) + ".py"


def test_the_docs_have_blocks_and_every_marker_is_on_a_python_block() -> None:
    assert len(RUNNABLE) >= 15, "the extraction lost the docs' Python blocks"
    for path in markdown_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines[:-1], start=1):
            if line.startswith("<!--") and re.search(r"\b(fragment|continued)\b", line):
                assert lines[number].startswith("```python"), (
                    f"{path.relative_to(ROOT)}:{number}: a marker must be on the line "
                    "just before a ```python fence"
                )


@pytest.fixture(scope="session")
def docs_test_module_failures(
    tmp_path_factory: pytest.TempPathFactory, sessionstore_server: PostgresServer
) -> dict[str, list[str]]:
    """Run every test-module block in one pytest run: each module's failures, by file.

    One run for all, because pytest's start-up is most of such a run. Under pytest-xdist
    the first worker here runs it; the others wait on the lock and read its results.
    The plugin's fixtures run on this run's server (in a template database of their
    own), with no config but the line docs/testing.md tells users to add.
    """
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # the run's directory, which all workers share
    results = shared / "docs-test-modules.json"
    with open(shared / "docs-test-modules.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not results.exists():
            results.write_text(json.dumps(_run_test_modules(shared, sessionstore_server)))
    failures: dict[str, list[str]] = json.loads(results.read_text())
    return failures


def _run_test_modules(shared: Path, server: PostgresServer) -> dict[str, list[str]]:
    suite = shared / "docs-test-modules"
    suite.mkdir()
    failures: dict[str, list[str]] = {}
    for block in RUNNABLE:
        if block.is_pytest_module():
            code = "\n".join(chunk.code for chunk in block.chain())
            (suite / module_name(block)).write_text(code, encoding="utf-8")
            failures[module_name(block)] = ["no test ran"]
    env = child_env()
    env["SESSIONSTORE_TEST_DSN"] = server.dsn
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=junit.xml"]
    args += ["-o", "asyncio_default_fixture_loop_scope=function"]
    result = run_python(args, env, suite)
    junit = suite / "junit.xml"
    if not junit.exists():
        return {name: [result.stdout + result.stderr] for name in failures}
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").split(".")[0] + ".py"
        if failures.get(module) == ["no test ran"]:
            failures[module] = []
        for problem in (*case.iter("failure"), *case.iter("error")):
            failures.setdefault(module, []).append(f"{case.get('name')}: {problem.text}")
    return failures


@pytest.mark.parametrize("block", RUNNABLE, ids=str)
def test_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if block.is_pytest_module():
        failures: dict[str, list[str]] = request.getfixturevalue("docs_test_module_failures")
        assert failures[module_name(block)] == [], f"{block}: its tests failed"
        return
    dsn: str = request.getfixturevalue("sessionstore_dsn")
    spec = tmp_path / "blocks.json"
    chunks = [{"path": b.path, "line": b.line, "code": b.code} for b in block.chain()]
    spec.write_text(json.dumps(chunks), encoding="utf-8")
    result = run_python([str(RUNNER), str(spec)], child_env(dsn), tmp_path)
    report = f"{block} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stderr == "", report
