"""Evidence a check records (counts, hashes, bounded diffs, timings) for reports.

Checks write into the ``evidence`` fixture, a plain dict; the plugin attaches it to the
test report (redacted), where the reports (JUnit properties, summary.json, Allure
attachments) pick it up. Diff helpers keep examples bounded so a million-row mismatch
still produces a readable message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_EXAMPLES = 10


def bounded(items: Iterable[Any], limit: int = MAX_EXAMPLES) -> list[Any]:
    out = []
    for i, item in enumerate(items):
        if i >= limit:
            break
        out.append(item)
    return out


def set_diff(label: str, expected: set[Any], actual: set[Any], *, expected_name: str,
             actual_name: str, limit: int = MAX_EXAMPLES) -> list[str]:
    """Lines naming what one side has and the other lacks, with bounded sorted examples."""
    lines = []
    missing = expected - actual
    extra = actual - expected
    if missing:
        ex = ", ".join(map(str, sorted(missing, key=str)[:limit]))
        lines.append(f"{len(missing)} {label} in {expected_name} but not in {actual_name}: {ex}"
                     + (" …" if len(missing) > limit else ""))
    if extra:
        ex = ", ".join(map(str, sorted(extra, key=str)[:limit]))
        lines.append(f"{len(extra)} {label} in {actual_name} but not in {expected_name}: {ex}"
                     + (" …" if len(extra) > limit else ""))
    return lines


def count_lines(pairs: dict[str, tuple[Any, Any]], left: str, right: str) -> list[str]:
    """'nodes: api 359 != database 360' for every pair that differs."""
    return [f"{k}: {left} {a} != {right} {b}" for k, (a, b) in pairs.items() if a != b]
