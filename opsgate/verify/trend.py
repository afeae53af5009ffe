"""Row counts against the last green run of the same target (health's trend).

A table that lost its rows between two releases is a fault even when every check of
this run, comparing two sides of today's data, agrees. The history the gate already
keeps (``reports/history.jsonl`` and each run's ``summary.json``) holds the counts of
earlier health checks, so nothing else needs storing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsgate.reports import history, summary_reader
from opsgate.verify.evidence_types import HealthTrend

__all__ = ["Trend", "last_green_counts", "trend"]

HISTORY = "history.jsonl"


def last_green_counts(reports_root: Path, target: str
                      ) -> tuple[str, dict[str, int | None]] | None:
    """(run id, counts) of the newest passed run of ``target`` whose health check
    recorded counts; None when there is none (first run, or history elsewhere)."""
    for entry in reversed(history.entries(reports_root / HISTORY)):
        if entry.get("target") != target or entry.get("verdict") != "passed":
            continue
        summary = summary_reader.load(reports_root / str(entry.get("dir", "")) / "summary.json")
        found = summary_reader.health_counts(summary) if summary is not None else None
        if found is not None:
            return str(entry.get("run_id")), found.counts
    return None


@dataclass
class Trend:
    compared_with: str | None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def evidence(self) -> HealthTrend:
        return HealthTrend(self.compared_with, self.tables)


def trend(now: Mapping[str, int | None], previous: tuple[str, Mapping[str, Any]] | None,
          max_shrink: float) -> Trend:
    """Each table's change since ``previous``; a table emptied, or shrunk by more than
    ``max_shrink`` (a fraction), is a problem naming both counts."""
    if previous is None:
        return Trend(None)
    run_id, before = previous
    out = Trend(run_id)
    for table, n in now.items():
        b = before.get(table)
        if not isinstance(b, int) or n is None:
            continue
        change = (n - b) / b if b else None
        out.tables[table] = {"previous": b, "now": n,
                             "change": None if change is None else f"{change:+.1%}"}
        if b > 0 and n == 0:
            out.problems.append(f"{table} was emptied: {b} rows in run {run_id}, 0 now")
        elif change is not None and -change > max_shrink:
            out.problems.append(f"{table} shrank {-change:.0%} (more than {max_shrink:.0%}): "
                                f"{b} rows in run {run_id}, {n} now")
    return out
