"""A check's key figures in a few words, for the step summary and the run page's table.

Generic by shape, since checks are added without telling the reports: each test's
top-level numbers and booleans, and every ``match`` found one level down
(``canonical_hash.match``). Two shapes get a sentence of their own because a reader
asks for them first: the drill's per-table comparison and health's row counts.
"""

from __future__ import annotations

from typing import Any

from opsgate.reports import summary_reader

#: Figures per check in the summary (the rest is in report.html).
MAX_FIGURES = 5
#: Evidence keys that are not figures (times, protocol details, internal counters).
SKIP = {"elapsed_ms", "server_version_num", "list_pages", "jobs", "bytes", "status"}


def _tables_figure(tables: list[Any]) -> str | None:
    rows = [t for t in tables if isinstance(t, dict) and "match" in t]
    if not rows:
        return None
    matched = sum(1 for t in rows if t.get("match") is True)
    source = sum(t.get("source_rows") or 0 for t in rows if isinstance(t.get("source_rows"), int))
    return f"tables {matched}/{len(rows)} identical ({source} source rows)"


def of_evidence(evidence: dict[str, Any]) -> list[str]:
    out: list[str] = []
    tables = evidence.get("tables")
    if isinstance(tables, list):
        found = _tables_figure(tables)
        if found:
            out.append(found)
    counts = evidence.get("counts")
    if isinstance(counts, dict) and counts and all(isinstance(v, int) for v in counts.values()):
        out.append(f"{len(counts)} tables, {sum(counts.values())} rows")
    for key, value in evidence.items():
        if key in SKIP:
            continue
        if isinstance(value, bool) or (isinstance(value, int | float) and not isinstance(
                value, bool)):
            out.append(f"{key} {str(value).lower() if isinstance(value, bool) else value}")
        elif isinstance(value, dict) and isinstance(value.get("match"), bool):
            out.append(f"{key} match {str(value['match']).lower()}")
    return out


def of_check(check: dict[str, Any]) -> list[str]:
    """The figures of every test of ``check`` (a summary.json check), bounded."""
    out: list[str] = []
    for test in summary_reader.tests_of(check):
        out += [f for f in of_evidence(test["evidence"]) if f not in out]
    return out[:MAX_FIGURES] + ([f"… {len(out) - MAX_FIGURES} more"]
                                if len(out) > MAX_FIGURES else [])
