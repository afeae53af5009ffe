"""The runner's shape, as the architecture asks for it: small stage functions and one
set of exit codes (`opsgate.operation`), so a reviewer reads one place for each."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import opsgate

PACKAGE = Path(opsgate.__file__).parent


def test_no_function_in_the_runner_package_is_over_80_lines() -> None:
    long = []
    for path in sorted((PACKAGE / "migrate").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)


def test_exit_codes_are_defined_once_in_operation() -> None:
    own = re.compile(r"^EXIT_[A-Z]+(?:, *EXIT_[A-Z]+)* *=", re.MULTILINE)
    places = [PACKAGE / "cli.py", *sorted((PACKAGE / "migrate").glob("*.py")),
              *sorted((PACKAGE / "refresh").glob("*.py"))]
    defining = [str(p.relative_to(PACKAGE)) for p in places if own.search(p.read_text())]
    assert not defining, "exit codes defined outside opsgate/operation.py: " + ", ".join(
        defining)
