"""No ``assert`` statement in opsgate/, shipped checks and migrations included.

``python -O`` drops every ``assert``: one that guards what happens at run time (a
cluster not started, a row the server did not send, a pipe not opened) would then let
the run go on into an error on ``None`` that names nothing. opsgate says these in
words instead: `opsgate.clients.db.one_row`, `opsgate.processes.piped`, and an explicit
error where a method is called out of order."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "opsgate"


def _asserts(source: str, where: str) -> list[str]:
    return [f"{where}:{node.lineno}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Assert)]


def test_the_scan_finds_an_assert() -> None:
    source = "def started(root):\n    assert root is not None, 'not started'\n    return root\n"
    assert _asserts(source, "example.py") == ["example.py:2"]
    assert _asserts(source.replace("assert root is not None, 'not started'", "pass"),
                    "example.py") == []


def test_no_assert_in_the_package() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 50
    found = [hit for path in paths
             for hit in _asserts(path.read_text(encoding="utf-8"),
                                 path.relative_to(PACKAGE.parent).as_posix())]
    assert found == [], "assert statements (gone under python -O): " + ", ".join(found)
