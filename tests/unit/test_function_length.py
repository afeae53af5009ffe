"""No function in opsgate/ is over 80 lines.

A long function hides its stages: a reader cannot name what each part does, a test cannot
reach one part alone, and a change to one part reads like a change to all. Split it into
small named functions (stages, route handlers taking their state) instead of raising the
limit."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "opsgate"
MAX_LINES = 80


def _long_functions(path: Path) -> list[str]:
    """``path:line name (N lines)`` for each function of ``path`` over the limit, nested
    ones included; a function's lines run from its ``def`` to its last line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_LINES:
                where = path.relative_to(PACKAGE.parent).as_posix()
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_walk_finds_the_package() -> None:
    assert len(list(PACKAGE.rglob("*.py"))) > 50


def test_no_function_is_over_80_lines() -> None:
    long = [entry for path in sorted(PACKAGE.rglob("*.py")) for entry in _long_functions(path)]
    assert long == [], "functions over 80 lines:\n" + "\n".join(long)
