"""Knowledge drift (runbook): the legacy constellation payload (admin_content_state key
'constellation', or OPSGATE_LEGACY_PAYLOAD_FILE) against the DB-backed kb_* graph,
node by node and edge by edge, streamed on both sides."""

from __future__ import annotations

from typing import Any

import allure
import psycopg
import pytest

from opsgate.clients import db
from opsgate.config import Settings
from opsgate.errors import OpsgateError
from opsgate.pytest_plugin.fixtures import fail
from opsgate.verify.drift import compare, payload_from_database, payload_from_file
from opsgate.verify.evidence_types import EvidenceStore
from opsgate.verify.expectations import Expectations

pytestmark = pytest.mark.knowledge_drift


def test_legacy_payload_matches_the_kb_graph(
    ops_settings: Settings, target_db: psycopg.Connection[Any], expectations: Expectations,
    evidence: EvidenceStore
) -> None:
    try:
        if ops_settings.legacy_payload_file:
            payload = payload_from_file(ops_settings.legacy_payload_file)
            source = f"file {ops_settings.legacy_payload_file}"
        else:
            payload = payload_from_database(target_db)
            source = "admin_content_state['constellation']"
        # compare() sorts the payload first and then reads the kb in a snapshot of its
        # own: the fixture's transaction must not sit idle through the sort.
        db.release(target_db)
        result = compare(payload, target_db, source, steps=allure.step)
    except OpsgateError as exc:
        fail(str(exc))
    pinned = expectations.pinned.get("kb_graph_sha256")
    evidence.set(result.evidence(pinned))
    if pinned and result.kb.graph_hash != pinned:
        fail(f"the kb graph changed: canon-v1 hash {result.kb.graph_hash}, pinned "
             f"{pinned} in {expectations.source}")
    if result.drifted:
        fail("the kb graph drifted from the legacy payload: "
             + " | ".join(result.summary_lines())
             + f" (graph hash payload {result.payload.graph_hash} vs kb "
             f"{result.kb.graph_hash})")
