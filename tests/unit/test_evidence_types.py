"""Typed evidence: its JSON is the evidence summary.json always held, and the reports
find it by role, so a renamed test still fills the drill record."""

from __future__ import annotations

from typing import Any

from opsgate.reports import drill_record, summary_reader
from opsgate.reports.model import RunRecord
from opsgate.reports.model import TestOutcome as Outcome
from opsgate.verify.evidence_blob import BlobStoreUsed
from opsgate.verify.evidence_types import (
    PARITY_KEY_ROLES,
    BlobParityEvidence,
    DrillEvidence,
    EvidenceStore,
    HealthCounts,
)

DRILL: dict[str, Any] = {
    "tables": [{"table": "kb_edges", "source_rows": 3, "restored_rows": 3, "match": True,
                "source_sha256": "a" * 64, "restored_sha256": "a" * 64}],
    "canonical_hash": {"source": "c" * 64, "restored": "c" * 64, "match": True},
    "archive": {"bytes": 10, "format": "directory"}, "source": "db.example/app",
    "restore_target": "scratch", "hash_version": "canon-v1", "timings_s": {"dump": 1.0},
}


def _record(*tests: Outcome) -> RunRecord:
    record = RunRecord(run_id="r", started_at="2026-01-01T00:00:00.000Z",
                       target={"name": "t"}, target_kind="sandbox", expression="",
                       expression_source="-m", opsgate_version="0",
                       finished_at="2026-01-01T00:00:01.000Z")
    for t in tests:
        record.tests[t.nodeid] = t
    return record


def test_the_json_of_typed_evidence_is_todays_evidence() -> None:
    assert DrillEvidence.from_drill(DRILL).as_json() == DRILL
    store = EvidenceStore()
    store.set(BlobStoreUsed("folder x"))
    store.set(BlobParityEvidence("b" * 64, "b" * 64))
    assert store.as_json() == {"store": "folder x", "blob_hash": "b" * 64, "neon_hash": "b" * 64}
    partial = BlobParityEvidence("b" * 64, partial="not compared")
    assert BlobParityEvidence.from_json(partial.as_json()) == partial
    assert not partial.compared
    assert HealthCounts({"kb_edges": 3, "gone": None}).as_json() == {
        "counts": {"kb_edges": 3, "gone": None}}


def test_a_renamed_drill_test_still_fills_the_drill_record() -> None:
    renamed = Outcome("checks/test_neon_drill.py::test_renamed", "test_renamed",
                          "neon_drill", "passed", 1.0, evidence=DRILL,
                          role=DrillEvidence.ROLE)
    record = drill_record.render(_record(renamed))
    assert "Dumped from db.example/app (restored into scratch)" in record
    assert "`kb_edges=3/3`" in record


def test_parity_key_checks_are_found_by_role() -> None:
    tests = [Outcome(f"checks/test_parity.py::test_{i}", f"test_{i}", "parity",
                         "failed" if i == 0 else "passed", 0.1, "counts differ" if i == 0
                         else "", role=role) for i, (role, _) in enumerate(PARITY_KEY_ROLES)]
    record = drill_record.render(_record(*tests))
    first, second = PARITY_KEY_ROLES[0][1], PARITY_KEY_ROLES[1][1]
    assert f"{first}: FAIL (counts differ)" in record and f", {second}," in record


def test_health_counts_are_read_one_way_from_any_summary() -> None:
    summary = {"checks": [{"marker": "health", "tests": [
        {"evidence": {"counts": {"kb_edges": 3, "gone": None, "odd": True}}}]}]}
    found = summary_reader.health_counts(summary)
    assert found is not None and found.counted() == {"kb_edges": 3}
    assert found.counts == {"kb_edges": 3, "gone": None}
    for damaged in ({}, {"checks": "x"}, {"checks": [1, {"marker": "health", "tests": 2}]},
                    {"checks": [{"marker": "health", "tests": [{"evidence": []}]}]}):
        assert summary_reader.health_counts(damaged) is None
