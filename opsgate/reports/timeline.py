"""The history as a series of runs, for the pages that show a run among the others.

``history.jsonl`` holds each run's verdict and counts; the per-table row counts live in
each run's ``summary.json`` (the health check's evidence). Both are read here once, for
the run page's trend table and for ``history.html``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsgate.reports import history, summary_reader

#: Runs shown on the history page and in a trend (the newest ones).
MAX_RUNS = 60


@dataclass
class Point:
    line: int  # 1-based line of history.jsonl
    run_id: str
    started_at: str
    verdict: str
    target: str
    line_sha256: str
    partial: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # health's row counts, if run
    tests: dict[str, int] = field(default_factory=dict)  # passed/failed/.../interrupted
    #: Why the gate failed beyond single checks (an interruption, "no check ran").
    notes: list[str] = field(default_factory=list)


def _health_counts(summary_file: Path) -> dict[str, int]:
    summary = summary_reader.load(summary_file)
    found = summary_reader.health_counts(summary) if summary is not None else None
    return found.counted() if found is not None else {}


def points(reports_root: Path, history_file: str = "history.jsonl",
           limit: int = MAX_RUNS) -> list[Point]:
    """The newest ``limit`` runs of the history, oldest first (lines that are not run
    records are skipped: ``opsgate reports verify`` names them)."""
    lines = history.read_lines(reports_root / history_file)
    out: list[Point] = []
    start = max(0, len(lines) - limit)
    for i, line in enumerate(lines[start:], start=start + 1):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str):
            continue
        tests = entry.get("counts") if isinstance(entry.get("counts"), dict) else {}
        where = entry.get("dir") if isinstance(entry.get("dir"), str) else ""
        out.append(Point(
            line=i, run_id=entry["run_id"], started_at=str(entry.get("started_at", "")),
            verdict=str(entry.get("verdict", "?")), target=str(entry.get("target", "")),
            line_sha256=history.line_hash(line), partial=bool(entry.get("partial_checks")),
            counts=_health_counts(reports_root / where / "summary.json") if where else {},
            tests={str(k): int(v) for k, v in (tests or {}).items() if isinstance(v, int)},
            notes=[str(n) for n in entry.get("notes") or [] if isinstance(n, str)]))
    return out


def count_series(runs: list[Point], target: str | None = None
                 ) -> tuple[list[Point], list[str]]:
    """The runs that recorded health counts (of ``target`` when given) and every table
    they name, in first-seen order."""
    chosen = [p for p in runs if p.counts and (target is None or p.target == target)]
    tables: list[str] = []
    for p in chosen:
        tables += [t for t in p.counts if t not in tables]
    return chosen, tables


def as_rows(series: list[Point], tables: list[str]) -> list[dict[str, Any]]:
    """One row per table: its count in each run (None where the run did not count it)."""
    return [{"table": t, **{p.run_id: p.counts.get(t) for p in series}} for t in tables]
