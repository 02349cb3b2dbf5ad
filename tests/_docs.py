"""The Python code blocks of README.md and docs/*.md, as test_docs_examples runs them.

A block is a ```` ```python ```` fence at the start of a line. The line just before the
fence may hold a marker, an HTML comment that MkDocs and GitHub do not render:

- ``<!-- fragment -->`` (optionally ``<!-- fragment: why -->``): not run, because the
  block uses names it does not define (an app's own ``authenticate``, a PgBouncer
  host) or is only a signature;
- ``<!-- continued -->``: runs after the file's previous runnable block (and what that
  one continues), in the same interpreter, as a reader who ran those first would.

Every other block must run on its own, given only ``dsn`` (a database holding the
sessions table; also in ``$DATABASE_URL`` and ``$SESSIONSTORE_DSN``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python\s*$")
MARKER = re.compile(r"^<!--\s*(fragment|continued)\b[^>]*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it is, its code, and how it runs."""

    path: str
    line: int  # the first line of code, 1-based, as an editor shows it
    code: str
    marker: str | None
    continues: Block | None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def fragment(self) -> bool:
        return self.marker == "fragment"

    def chain(self) -> list[Block]:
        """The blocks this one continues, oldest first, then this one."""
        blocks = [self]
        while blocks[0].continues is not None:
            blocks.insert(0, blocks[0].continues)
        return blocks

    def is_pytest_module(self) -> bool:
        """Whether the chain defines test functions, so it runs under pytest."""
        return any(_defines_tests(block.code) for block in self.chain())


def _defines_tests(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a doctest block (">>>") is not a module
        return False
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        for node in tree.body
    )


def markdown_files() -> list[Path]:
    """README.md, then docs/*.md in name order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """The Python blocks of one markdown file, with their markers resolved."""
    relative = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        if not FENCE.match(lines[index]):
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"{relative}:{index + 1}: unclosed code fence"
        found = MARKER.match(lines[index - 1]) if index else None
        marker = found.group(1) if found else None
        continues = None
        if marker == "continued":
            runnable = [block for block in blocks if not block.fragment]
            assert runnable, f"{relative}:{index + 1}: nothing before it to continue"
            continues = runnable[-1]
        code = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(relative, index + 2, code, marker, continues))
        index = end + 1
    return blocks


def all_blocks() -> list[Block]:
    """Every Python block of README.md and docs/*.md."""
    return [block for path in markdown_files() for block in blocks_of(path)]
