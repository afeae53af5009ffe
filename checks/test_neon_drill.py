"""Backup/restore drill (runbook: "Neon backup/restore drill"): pg_dump the target,
pg_restore into a throwaway local PostgreSQL (default), a scratch database on the target
server (OPSGATE_DRILL_RESTORE=target-scratch) or DRILL_DATABASE_URL, compare every
contract table's row count and canon-v1 hash. Writes only to the restored copy."""

from __future__ import annotations

from collections.abc import Callable

import allure
import pytest

from opsgate.config import Settings
from opsgate.errors import DrillError
from opsgate.pytest_plugin.fixtures import fail
from opsgate.verify.drill import run_drill
from opsgate.verify.evidence_types import DrillEvidence, EvidenceStore

pytestmark = pytest.mark.neon_drill


@pytest.mark.opsgate_role(DrillEvidence.ROLE)
def test_backup_restores_to_identical_tables(ops_settings: Settings, evidence: EvidenceStore,
                                             slow_connects: Callable[[str, float], None]
                                             ) -> None:
    try:
        result = run_drill(ops_settings, steps=allure.step)
    except DrillError as exc:
        fail(str(exc))
    slow_connects(result.source, result.timings_s.get("connect", 0.0))
    evidence.set(DrillEvidence.from_drill(result.evidence()))
    problems = result.problems
    if problems:
        fail(
            f"{len(problems)} table(s) differ after restore: " + "; ".join(problems[:10])
            + f" (canonical hash source {result.source_hash} vs restored {result.restored_hash})"
        )
