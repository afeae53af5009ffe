"""Through the gate: a check's role reaches the run's record whatever the test is named
and whatever its outcome, and its typed evidence is what summary.json holds."""

from __future__ import annotations

import json

import pytest

from tests.gate_helpers import gate_project

CHECKS = """
import pytest

from opsgate.verify.evidence_types import DrillEvidence

@pytest.mark.neon_drill
@pytest.mark.opsgate_role(DrillEvidence.ROLE)
def test_a_name_no_report_knows(evidence):
    evidence.set(DrillEvidence(
        tables=[{"table": "kb_edges", "source_rows": 3, "restored_rows": 3, "match": True}],
        canonical_hash={"source": "c" * 64, "restored": "c" * 64, "match": True},
        source="source-db", restore_target="scratch-db", details={"hash_version": "canon-v1"}))

@pytest.fixture
def broken():
    raise RuntimeError("the fixture broke")

@pytest.mark.parity
@pytest.mark.opsgate_role("parity.counts")
def test_counts_renamed(broken):
    pass
"""


def test_roles_carry_the_drill_record_past_a_rename(pytester: pytest.Pytester,
                                                    clean_env: pytest.MonkeyPatch) -> None:
    gate_project(pytester, CHECKS)
    clean_env.setenv("DATABASE_URL", "postgresql://u:pw-roles@127.0.0.1:9/db")
    clean_env.setenv("OPS_BASE_URL", "http://127.0.0.1:9")
    clean_env.setenv("ADMIN_PASSWORD", "admin-roles")
    result = pytester.runpytest("-m", "neon_drill or parity")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    (run,) = (pytester.path / "reports" / "runs").iterdir()
    record = (run / "drill-record.md").read_text()
    assert "Dumped from source-db (restored into scratch-db)" in record
    assert "`kb_edges=3/3`" in record
    # A setup error still reaches the record under its role.
    assert "Key checks: nodes/edges counts aligned: FAIL (" in record
    summary = json.loads((run / "summary.json").read_text())
    (drill,) = [c for c in summary["checks"] if c["marker"] == "neon_drill"]
    assert drill["tests"][0]["evidence"] == {
        "tables": [{"table": "kb_edges", "source_rows": 3, "restored_rows": 3, "match": True}],
        "canonical_hash": {"source": "c" * 64, "restored": "c" * 64, "match": True},
        "source": "source-db", "restore_target": "scratch-db", "hash_version": "canon-v1"}
    assert "role" not in drill["tests"][0]  # summary.json's contract is unchanged
