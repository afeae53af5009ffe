"""Health counts (runbook: "Weekly or after material admin edits"): row counts of the
admin and kb tables, recorded as evidence; a missing table or one below its floor
fails, and so does a table emptied or shrunk beyond the allowed fraction since the last
green run of the same target (the trend is in the evidence)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.config import Settings
from opsgate.pytest_plugin.fixtures import fail
from opsgate.target import db
from opsgate.target.schema import CONTRACT_TABLES
from opsgate.verify.expectations import Expectations
from opsgate.verify.trend import last_green_counts, trend

pytestmark = pytest.mark.health


def test_row_counts(target_db: psycopg.Connection[Any], ops_settings: Settings,
                    expectations: Expectations, reports_root: Path,
                    evidence: dict[str, Any]) -> None:
    counts = db.count_rows(target_db, CONTRACT_TABLES)
    evidence["counts"] = counts
    absent = [t for t, n in counts.items() if n is None]
    problems = ([f"missing tables: {', '.join(absent)}"] if absent else [])
    problems += [p for p in expectations.floor_problems(counts) if "is missing" not in p]
    target = str(ops_settings.target_identity()["name"])
    change = trend(counts, last_green_counts(reports_root, target), expectations.max_shrink)
    evidence["trend"] = change.as_evidence()
    problems += change.problems
    if problems:
        fail("; ".join(problems))
