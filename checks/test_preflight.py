"""Preflight (runbook: "Per deployment"): the backend is neon, the database answers
with every contract table and column and holds the expected production markers, the
deployment answers. Read only."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest

from opsgate.clients import db
from opsgate.clients import web as http
from opsgate.clients.schema import CONTRACT_TABLES, missing_columns
from opsgate.config import Settings
from opsgate.errors import HttpCheckError
from opsgate.pytest_plugin.fixtures import fail
from opsgate.verify.evidence_database import ProductionMarkers, StorageBackend
from opsgate.verify.evidence_deployment import DeploymentAnswer
from opsgate.verify.evidence_types import EvidenceStore, ServerEvidence
from opsgate.verify.expectations import Expectations

pytestmark = pytest.mark.preflight


def test_storage_backend_is_neon(ops_settings: Settings, evidence: EvidenceStore) -> None:
    backend = ops_settings.admin_storage_backend
    evidence.set(StorageBackend(backend))
    if backend is None:
        fail("ADMIN_STORAGE_BACKEND is not set; the production backend must be 'neon'")
    if backend != "neon":
        fail(f"ADMIN_STORAGE_BACKEND is {backend!r}; production must run on 'neon' "
             "('file' and 'blob' are fallback or migration-source backends)")


@pytest.mark.opsgate_role(ServerEvidence.ROLE)
def test_database_answers_with_the_contract_schema(
    target_db: psycopg.Connection[Any], evidence: EvidenceStore
) -> None:
    row = target_db.execute("SELECT current_setting('server_version'), "
                            "current_setting('server_version_num')::int, "
                            "current_database()").fetchone()
    assert row is not None
    missing = missing_columns(target_db, CONTRACT_TABLES)
    evidence.set(ServerEvidence(row[0], row[1], row[2], missing))
    if missing:
        fail(f"the database lacks {len(missing)} contract item(s): "
             + ", ".join(missing[:15]))


def test_expected_production_markers(
    target_db: psycopg.Connection[Any], expectations: Expectations, evidence: EvidenceStore
) -> None:
    """Runbook: "verify expected production markers". Row floors per table and the
    required domains: an empty or gutted target is red even when every comparison of
    two empty things would agree. The ledger's floor is the ledger check's (it names
    the migration that went), so a fact is judged once."""
    counts = db.count_rows(target_db, expectations.floors_judged_by("preflight"))
    markers = ProductionMarkers(expectations.as_evidence(), counts)
    evidence.set(markers)
    problems = expectations.floor_problems(counts, "preflight")
    if expectations.required_domains and counts.get("kb_entities") is not None:
        present = {r[0] for r in target_db.execute("SELECT DISTINCT domain FROM kb_entities")}
        missing = [d for d in expectations.required_domains if d not in present]
        evidence.set(replace(markers, domains=sorted(present)))
        if missing:
            problems.append(f"required domains missing from kb_entities: {', '.join(missing)}")
    if problems:
        fail(f"expected production markers missing ({expectations.source}): "
             + "; ".join(problems))


def test_check_sessions_are_read_only(target_db: psycopg.Connection[Any]) -> None:
    """Guards the rule 'checks never write': the session itself refuses writes."""
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        target_db.execute("CREATE TEMP TABLE opsgate_write_probe (x int)")


def test_deployment_answers(deployment: httpx.Client, evidence: EvidenceStore) -> None:
    try:
        resp = http.request(deployment, "GET", "/", what="deployment")
    except HttpCheckError as exc:
        fail(str(exc))
    evidence.set(DeploymentAnswer(resp.status_code,
                                  round(resp.elapsed.total_seconds() * 1000, 1),
                                  resp.is_redirect, resp.headers.get("location")))
    if not 200 <= resp.status_code < 400:
        fail(
            f"deployment at {deployment.base_url} answered HTTP {resp.status_code}; a serving "
            "deployment answers 2xx (or 3xx, a redirect)"
        )
