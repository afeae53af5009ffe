"""One set of exit codes (`opsgate.operation`), so a reviewer reads one place for them.
The length of every function in opsgate/ is held by tests/unit/test_function_length.py."""

from __future__ import annotations

import re
from pathlib import Path

import opsgate

PACKAGE = Path(opsgate.__file__).parent


def test_exit_codes_are_defined_once_in_operation() -> None:
    own = re.compile(r"^EXIT_[A-Z]+(?:, *EXIT_[A-Z]+)* *=", re.MULTILINE)
    places = [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "operation.py"]
    defining = [str(p.relative_to(PACKAGE)) for p in places if own.search(p.read_text())]
    assert not defining, "exit codes defined outside opsgate/operation.py: " + ", ".join(
        defining)
