"""Through the gate: a check's role reaches the run's record whatever the test is named
and whatever its outcome, its typed evidence is what summary.json holds, and a failed
test's kind is the type of the error behind it."""

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

@pytest.mark.ledger
def test_unreachable_in_words_of_a_verdict():
    from opsgate.errors import DatabaseUnavailableError
    from opsgate.pytest_plugin.fixtures import fail

    try:
        raise DatabaseUnavailableError("gone")
    except DatabaseUnavailableError:
        fail("the ledger differs from the scripts")

@pytest.mark.ledger
def test_a_verdict():
    from opsgate.pytest_plugin.fixtures import fail

    fail("the database did not answer (the words of another kind)")

@pytest.mark.deployment
def test_needs_vercel_token():
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one", "xdist"])
def test_roles_carry_the_drill_record_past_a_rename(pytester: pytest.Pytester,
                                                    clean_env: pytest.MonkeyPatch,
                                                    workers: list[str]) -> None:
    """Under pytest-xdist the role and the kind reach the controller on the workers'
    reports (the controller collects nothing itself)."""
    gate_project(pytester, CHECKS)
    clean_env.setenv("DATABASE_URL", "postgresql://u:pw-roles@127.0.0.1:9/db")
    clean_env.setenv("OPS_BASE_URL", "http://127.0.0.1:9")
    clean_env.setenv("ADMIN_PASSWORD", "admin-roles")
    result = pytester.runpytest("-m", "neon_drill or parity or ledger or deployment",
                                *workers)
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
    assert "role" not in drill["tests"][0] and "kind" not in drill["tests"][0]
    kinds = {t["name"]: t.get("kind") for c in summary["checks"] for t in c["tests"]}
    # A failure's kind is the type of the error behind it, never its words.
    assert kinds == {"test_a_name_no_report_knows": None,
                     "test_counts_renamed": "Unexpected error",
                     "test_unreachable_in_words_of_a_verdict": "Target unreachable",
                     "test_a_verdict": "Check verdict",
                     "test_needs_vercel_token": "Missing variable"}
    assert "(Target unreachable)" in (run / "report.html").read_text()
