"""Health counts (runbook: "Weekly or after material admin edits"): row counts of the
admin and kb tables, recorded as evidence, against the last green run of the same
target: a table emptied or shrunk beyond the allowed fraction (``max_shrink``) fails,
and the trend is in the evidence.

Health judges the trend only. A missing table is preflight's (the contract schema), a
table below its floor preflight's or the ledger check's: judged here too, one fault
would be the same sentence in two red checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.clients import db
from opsgate.clients.schema import CONTRACT_TABLES
from opsgate.config import Settings
from opsgate.pytest_plugin.fixtures import fail
from opsgate.verify.evidence_types import EvidenceStore, HealthCounts
from opsgate.verify.expectations import Expectations
from opsgate.verify.trend import last_green_counts, trend

pytestmark = pytest.mark.health


@pytest.mark.opsgate_role(HealthCounts.ROLE)
def test_row_counts(target_db: psycopg.Connection[Any], ops_settings: Settings,
                    expectations: Expectations, reports_root: Path,
                    evidence: EvidenceStore) -> None:
    counts = db.count_rows(target_db, CONTRACT_TABLES)
    evidence.set(HealthCounts(dict(counts)))  # a missing table shows as null
    target = str(ops_settings.target_identity()["name"])
    change = trend(counts, last_green_counts(reports_root, target), expectations.max_shrink)
    evidence.set(change.evidence())
    if change.problems:
        fail("; ".join(change.problems))
