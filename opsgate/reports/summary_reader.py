"""The one reader of summary.json: its checks, their tests, and health's row counts.

The run page, the history page's trend and the step summary each used to walk the
summary's ``checks`` on their own, each with its own idea of a damaged file or a count
(one kept ``true`` as a count of 1). Everything that reads a summary, this run's or an
earlier run's from disk, reads it here: anything not shaped as opsgate writes it (an
earlier run's file may be damaged or edited; `opsgate reports verify` says so) is
skipped, never a crash of the run that reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opsgate.verify.evidence_types import HealthCounts


def load(path: Path) -> dict[str, Any] | None:
    """A summary.json from disk, or None when it is missing or not a JSON object."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def checks(summary: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The summary's checks that are objects with a marker, in the summary's order."""
    found = summary.get("checks")
    for check in found if isinstance(found, list) else []:
        if isinstance(check, dict) and isinstance(check.get("marker"), str):
            yield check


def tests_of(check: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A check's tests that are objects, each with an ``evidence`` object (maybe empty)."""
    found = check.get("tests")
    for test in found if isinstance(found, list) else []:
        if isinstance(test, dict):
            evidence = test.get("evidence")
            yield {**test, "evidence": evidence if isinstance(evidence, dict) else {}}


def evidence_of(summary: dict[str, Any], marker: str) -> Iterator[dict[str, Any]]:
    """The evidence of every test of the check ``marker``."""
    for check in checks(summary):
        if check["marker"] == marker:
            for test in tests_of(check):
                yield test["evidence"]


def health_counts(summary: dict[str, Any]) -> HealthCounts | None:
    """Health's row counts (a missing table's is None), or None when the run did not
    count (health not run, or its evidence holds no counts)."""
    for evidence in evidence_of(summary, HealthCounts.MARKER):
        if isinstance(evidence.get("counts"), dict):
            return HealthCounts.from_json(evidence)
    return None
