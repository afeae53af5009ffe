"""Evidence a check records (counts, hashes, bounded diffs, timings) for reports.

Checks hand typed records (`opsgate.verify.evidence_types`) to the ``evidence``
fixture; the plugin attaches their JSON to the test report (redacted), where the
reports (JUnit properties, summary.json, Allure attachments) pick it up. Diff helpers
keep examples bounded so a million-row mismatch still produces a readable message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

MAX_EXAMPLES = 10
#: Characters of one value shown in a difference; longer values end in "…".
VALUE_WIDTH = 80


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


def shown(value: Any, width: int = VALUE_WIDTH) -> str:
    """A value as compact JSON, cut to ``width`` characters."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def _leaf_differences(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}"
            if key not in a:
                yield sub, "(absent)", b[key]
            elif key not in b:
                yield sub, a[key], "(absent)"
            else:
                yield from _leaf_differences(a[key], b[key], sub)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _leaf_differences(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield path, a, b


def value_differences(a: Any, b: Any, left: str, right: str,
                      limit: int = 3) -> list[str]:
    """Where two JSON values differ, as "$.path: left <old> vs right <new>" lines, at
    most ``limit`` of them plus a count of the rest: old and new values side by side."""
    found = list(bounded(_leaf_differences(a, b, "$"), limit + 1))
    lines = [f"{path}: {left} {x if isinstance(x, str) and x == '(absent)' else shown(x)} vs "
             f"{right} {y if isinstance(y, str) and y == '(absent)' else shown(y)}"
             for path, x, y in found[:limit]]
    if len(found) > limit:
        lines.append("and more")
    return lines
