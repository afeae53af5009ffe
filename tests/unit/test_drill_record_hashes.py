"""The drill record lists what its combined hash is made of: every table's SHA-256 on
both sides, and says how they combine (recomputed from a real run in
tests/integration/test_hashes_recomputed.py)."""

from __future__ import annotations

from opsgate.reports import drill_record

A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_the_record_lists_both_sides_hashes_per_table_and_names_a_difference() -> None:
    ev = {"tables": [{"table": "kb_edges", "source_sha256": A, "restored_sha256": A},
                     {"table": "kb_entities", "source_sha256": B, "restored_sha256": C},
                     {"table": "kb_workflows", "source_sha256": C, "restored_sha256": None}],
          "canonical_hash": {"source": A, "restored": B, "match": False}}
    lines = drill_record._table_hashes(ev)
    assert lines[0] == "  - Per-table SHA-256, source / restored copy:"
    assert lines[1:] == [f"    - `kb_edges`: `{A}` / `{A}`",
                         f"    - `kb_entities`: `{B}` / `{C}` (DIFFERENT)",
                         f"    - `kb_workflows`: `{C}` / `missing` (DIFFERENT)"]
    combined = drill_record._combined_hash(ev)
    assert combined.startswith(f"Canonical hash MISMATCH: `{A}` vs restored `{B}`")
    assert "SHA-256 of the RFC 8785 JSON of {table: that table's SHA-256}" in combined
    assert drill_record._table_hashes({}) == []
