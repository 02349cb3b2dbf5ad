"""Run documentation code blocks in this (fresh) interpreter: the child side of test_docs_examples.

Usage: ``python -W error tests/_docs_runner.py SPEC.json``. The spec is a JSON list of
chunks, ``{"path": ..., "line": ..., "code": ...}``: a block and the blocks it continues,
in order. They run in one namespace that holds ``dsn`` (the test database's DSN), as a
reader runs them one after the other. Each chunk is compiled under its own file name and
line numbers, so a traceback points at the markdown line that failed. A chunk with a
top-level ``await`` runs as ``python -m asyncio`` would run it; a chunk of ``>>>`` lines
runs as a doctest. Exits 1 with the traceback on stderr when a chunk fails.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import inspect
import json
import os
import sys
from typing import Any


def run_chunk(chunk: dict[str, Any], namespace: dict[str, Any]) -> None:
    """Run one block in `namespace`; raise on failure."""
    path, line, code = chunk["path"], chunk["line"], chunk["code"]
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, namespace, path, path, line - 1)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        result = runner.run(test, clear_globs=False)
        if result.failed:
            raise SystemExit(f"{path}:{line}: {result.failed} doctest example(s) failed")
        return
    # Blank lines in front keep the markdown's line numbers in tracebacks.
    source = "\n" * (line - 1) + code
    compiled = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:
        coroutine = eval(compiled, namespace)
        asyncio.run(coroutine)
    else:
        exec(compiled, namespace)


def main() -> None:
    """Run the chunks of the spec named on the command line."""
    with open(sys.argv[1], encoding="utf-8") as f:
        chunks = json.load(f)
    namespace: dict[str, Any] = {"__name__": "__main__", "dsn": os.environ["DATABASE_URL"]}
    for chunk in chunks:
        run_chunk(chunk, namespace)


if __name__ == "__main__":
    main()
