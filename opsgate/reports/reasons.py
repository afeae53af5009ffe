"""Why a run is red, one entry per cause: tests that failed with the same message (a
database that did not answer fails every check that reads it) are one cause, naming
each test, so the first lines a reader sees are distinct problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Outcomes that make the gate red (a skipped check did not run, which fails the gate).
RED = {"failed": "failed", "error": "error (setup)", "skipped": "did not run",
       "interrupted": "interrupted"}


@dataclass
class Cause:
    message: str
    outcome: str  # the first test's, as RED words it
    tests: list[dict[str, str]] = field(default_factory=list)  # marker, name, nodeid


def causes(checks: list[dict[str, Any]]) -> list[Cause]:
    """The causes of a red run from summary.json's ``checks``, in check order."""
    found: dict[str, Cause] = {}
    for c in checks:
        for t in c.get("tests", []):
            outcome = t.get("outcome")
            if outcome not in RED:
                continue
            message = str(t.get("message") or "no message")
            cause = found.setdefault(message, Cause(message, RED[outcome]))
            cause.tests.append({"marker": str(c.get("marker")), "name": str(t.get("name")),
                                "nodeid": str(t.get("nodeid"))})
    return list(found.values())


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
