"""Every check hands its evidence over typed, and each record's JSON is, key for key,
what summary.json held before the checks were typed (``opsgate-summary/3`` describes a
test's evidence as an object: these literals are its content, as reports and auditors
read it). Nothing in checks/ writes evidence keys: the store takes records only."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from opsgate.verify import change_control, drift, trend
from opsgate.verify.evidence_blob import (
    BlobContentState,
    BlobListing,
    BlobNeonComparison,
    BlobObjects,
    BlobStoreUsed,
)
from opsgate.verify.evidence_database import (
    LedgerApplied,
    LedgerChecksums,
    LedgerRows,
    ProductionMarkers,
    StorageBackend,
)
from opsgate.verify.evidence_deployment import (
    BaseUrlHost,
    DeploymentAnswer,
    EnvTargets,
    LinkedProject,
    ProductionDeployment,
)
from opsgate.verify.evidence_parity import (
    ParityBuildNotes,
    ParityCounts,
    ParityDomains,
    ParityEndpoints,
    ParityOverview,
    ParityShape,
)
from opsgate.verify.evidence_types import (
    ConnectionLostAndRetried,
    Evidence,
    EvidenceStore,
    Partial,
)

CHECKS = Path(__file__).resolve().parents[2] / "checks"
H = "a" * 64

#: (record, the evidence JSON the check wrote key by key before it was typed).
RECORDS: list[tuple[Evidence, dict[str, Any]]] = [
    (ParityShape({"counts": {"nodes": 2}}, 120),
     {"metadata": {"counts": {"nodes": 2}}, "api_bytes": 120}),
    (ParityCounts({"nodes": 2, "edges": 1, "metadata_counts": {"nodes": 2}},
                  {"nodes": 2, "edges": 1}, {"node ids": True, "edges": False}, ["x"]),
     {"api": {"nodes": 2, "edges": 1, "metadata_counts": {"nodes": 2}},
      "database": {"nodes": 2, "edges": 1}, "digests_equal": {"node ids": True, "edges": False},
      "differences": ["x"]}),
    (ParityDomains(["a", "b"], ["a"]), {"api_domains": ["a", "b"], "database_domains": ["a"]}),
    (ParityBuildNotes({"api": 1, "metadata": 1, "database": 1},
                      {"api": 2, "metadata": 2, "database": 3}),
     {"build": {"api": 1, "metadata": 1, "database": 1},
      "notes": {"api": 2, "metadata": 2, "database": 3}}),
    (ParityEndpoints(0), {"dangling_edges": 0}),
    (ParityOverview({"counts": {"nodes": 2}}, {"nodes": 2}),
     {"overview": {"counts": {"nodes": 2}}, "database": {"nodes": 2}}),
    (LedgerApplied([{"name": "m1", "ledger_id": None, "payload_hash": None}], ["m1"],
                   {"admin_migrations": 1}),
     {"migrations": [{"name": "m1", "ledger_id": None, "payload_hash": None}],
      "required_migrations": ["m1"], "floors": {"admin_migrations": 1}}),
    (LedgerChecksums({"m1": H}), {"checksums": {"m1": H}}),
    (LedgerRows(3), {"ledger_rows": 3}),
    (StorageBackend(None), {"ADMIN_STORAGE_BACKEND": None}),
    (ProductionMarkers({"source": "built-in"}, {"kb_entities": None}),
     {"expectations": {"source": "built-in"}, "counts": {"kb_entities": None}}),
    (ProductionMarkers({"source": "f"}, {"kb_entities": 4}, ["a"]),
     {"expectations": {"source": "f"}, "counts": {"kb_entities": 4}, "domains": ["a"]}),
    (DeploymentAnswer(200, 12.5), {"status": 200, "elapsed_ms": 12.5}),
    (DeploymentAnswer(307, 1.0, True, None),
     {"status": 307, "elapsed_ms": 1.0, "location": None}),
    (LinkedProject("VERCEL_PROJECT_ID", "prj_1", None),
     {"linked_by": "VERCEL_PROJECT_ID", "project_id": "prj_1", "org_id": None}),
    (LinkedProject("project.json", "prj_1", "team_1", {"id": "prj_1"}),
     {"linked_by": "project.json", "project_id": "prj_1", "org_id": "team_1",
      "project": {"id": "prj_1"}}),
    (EnvTargets({"production": {"keys": {}}}, 0),
     {"targets": {"production": {"keys": {}}}, "variables_listed": 0}),
    (ProductionDeployment({"id": "dpl_1"}), {"deployment": {"id": "dpl_1"}}),
    (BaseUrlHost("app.example"), {"OPS_BASE_URL host": "app.example"}),
    (BlobStoreUsed("folder x"), {"store": "folder x"}),
    (BlobListing([{"pathname": "p", "size": 1, "uploadedAt": "t"}], None),
     {"objects": [{"pathname": "p", "size": 1, "uploadedAt": "t"}], "list_pages": None}),
    (BlobContentState(2), {"content_state_keys": 2}),
    (BlobContentState(2, 0), {"content_state_keys": 2, "history_entries": 0}),
    (BlobNeonComparison({"k": 1}, {"k": 1}, {}, ["blob h", "neon h", "m"]),
     {"blob_counts": {"k": 1}, "neon_counts": {"k": 1}, "differences": {},
      "runbook_lines": ["blob h", "neon h", "m"]}),
    (BlobNeonComparison({}, {}, {}, [], H),
     {"blob_counts": {}, "neon_counts": {}, "differences": {}, "runbook_lines": [],
      "pinned_admin_state_sha256": H}),
    (BlobObjects("p/", ["p/a", "p/b"], ["p/a", "p/c"]),
     {"prefix": "p/", "expected": ["p/a", "p/b"], "found": ["p/a", "p/c"],
      "missing": ["p/b"], "extra": ["p/c"], "object_count": 2}),
    (Partial("not compared"), {"partial": "not compared"}),
    (ConnectionLostAndRetried("terminating connection due to administrator command"),
     {"connection_lost_and_retried": "terminating connection due to administrator command"}),
    (trend.Trend(None).evidence(),
     {"trend": {"compared_with": "no earlier green run of this target", "tables": {}}}),
    (trend.Trend("r1", {"t": {"previous": 2, "now": 1, "change": "-50.0%"}}).evidence(),
     {"trend": {"compared_with": "r1",
                "tables": {"t": {"previous": 2, "now": 1, "change": "-50.0%"}}}}),
]


@pytest.mark.parametrize(("record", "today"), RECORDS,
                         ids=[f"{type(r).__name__}-{i}" for i, (r, _) in enumerate(RECORDS)])
def test_each_record_writes_the_evidence_summary_json_holds(record: Evidence,
                                                            today: dict[str, Any]) -> None:
    assert record.as_json() == today
    with pytest.raises(AttributeError):
        record.__setattr__("x", 1)  # frozen: what was handed over stays as it was


def test_drift_and_change_control_records_keep_their_keys() -> None:
    side = drift.Side("payload", 2, 1, ["a"], H)
    result = drift.DriftResult(side, drift.Side("kb", 2, 1, ["a"], H), {"node": 1},
                               {"node": ["n1"]}, {"kb": 0.1}, "file p.json")
    assert result.evidence().as_json() == {
        "source": "file p.json",
        "payload": {"label": "payload", "nodes": 2, "edges": 1, "domains": ["a"],
                    "graph_hash": H},
        "kb": {"label": "kb", "nodes": 2, "edges": 1, "domains": ["a"], "graph_hash": H},
        "hash_match": True, "differences": {"node": 1}, "examples": {"node": ["n1"]},
        "timings_s": {"kb": 0.1}, "hash_version": "canon-v1"}
    assert result.evidence(H).as_json()["pinned_kb_graph_sha256"] == H
    paths = change_control.ChangePaths("migrations/", "docs/m.md", "CHANGELOG.md", "docs/c.md")
    review = change_control.ChangeReview("a..b", "/repo", "a", "b", "a", ["c1 msg"], [], paths)
    assert review.evidence().as_json() == {
        "range": "a..b", "repo": "/repo", "base": "a", "head": "b", "merge_base": "a",
        "commits_inspected": 1, "commits": ["c1 msg"],
        "paths": {"migrations": "migrations/", **paths.documents()},
        "migrations_changed": 0, "migrations": [],
        "note": "no migration script added or changed in 1 commit(s)"}


def test_the_store_takes_records_only() -> None:
    store = EvidenceStore()
    store.set(BlobStoreUsed("folder x"))
    store.set(BlobContentState(2))
    store.set(BlobContentState(2, 5))  # a fuller record replaces what its keys name
    assert store.as_json() == {"store": "folder x", "content_state_keys": 2,
                               "history_entries": 5}
    assert store["store"] == "folder x" and len(store) == 3
    with pytest.raises(TypeError):
        store["store"] = "written by hand"  # type: ignore[index]
    assert not hasattr(store, "update")


def test_a_check_tried_once_more_keeps_only_its_fixtures_records() -> None:
    store = EvidenceStore()
    store.set(BlobStoreUsed("folder x"))  # a fixture's, set before the test ran
    before = store.as_json()
    store.set(BlobContentState(2))  # the first attempt's
    store.rewind(before)
    assert store.as_json() == {"store": "folder x"}
    before["store"] = "changed"  # the store holds its own copy
    assert store["store"] == "folder x"


def _writes_keys(path: Path) -> list[str]:
    """Each use of an ``evidence`` name in ``path`` other than ``evidence.set(...)``,
    reading a key or passing it on: ``evidence[...] = ...``, ``evidence.update(...)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in [e for g in targets for e in (g.elts if isinstance(g, ast.Tuple) else [g])]:
            if (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                    and t.value.id == "evidence"):
                found.append(f"{path.name}:{t.lineno} evidence[...] =")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "evidence" and node.attr not in ("set", "get")):
            found.append(f"{path.name}:{node.lineno} evidence.{node.attr}")
    return found


def test_no_check_writes_evidence_keys() -> None:
    """A check or fixture in checks/ hands a record to ``evidence.set``; writing keys
    would be evidence no type describes (and the store refuses it when the test runs)."""
    modules = sorted(CHECKS.glob("*.py"))
    assert modules
    assert [w for m in modules for w in _writes_keys(m)] == []


def test_the_self_test_sees_keys_written(tmp_path: Path) -> None:
    probe = tmp_path / "evidence_probe.py"
    probe.write_text("def t(evidence):\n    evidence['a'] = 1\n    evidence['b'], x = 2, 3\n"
                     "    evidence.update({})\n    evidence.set(r)\n", encoding="utf-8")
    assert _writes_keys(probe) == ["evidence_probe.py:2 evidence[...] =",
                                   "evidence_probe.py:3 evidence[...] =",
                                   "evidence_probe.py:4 evidence.update"]
