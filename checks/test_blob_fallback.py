"""Blob fallback verification (runbook): the blob copy of the admin state under
ADMIN_BLOB_PREFIX is complete and well-formed (usable if ADMIN_STORAGE_BACKEND is
switched to blob), and its canon-v1 hash equals Postgres' admin state."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from opsgate.blob import AdminState, BlobError, read_admin_state
from opsgate.blob_parity import compare, store_for
from opsgate.config import Settings
from opsgate.fixtures import connect_read_only

pytestmark = pytest.mark.blob_fallback


@pytest.fixture
def blob_state(ops_settings: Settings, evidence: dict[str, Any]) -> AdminState:
    store = store_for(ops_settings)
    evidence["store"] = store.describe()
    try:
        state = read_admin_state(store, ops_settings.admin_blob_prefix)
    except BlobError as exc:
        pytest.fail(f"the blob fallback is not usable: {exc}", pytrace=False)
    evidence["objects"] = [o.as_dict() for o in state.objects]
    evidence["list_pages"] = getattr(store, "pages", None)
    return state


def test_blob_state_is_complete_and_well_formed(blob_state: AdminState,
                                                evidence: dict[str, Any]) -> None:
    evidence["content_state_keys"] = len(blob_state.content_state)
    evidence["history_entries"] = len(blob_state.history)
    assert blob_state.content_state, "content-state.json holds no key"


def test_blob_and_neon_hashes_match(blob_state: AdminState, ops_settings: Settings,
                                    evidence: dict[str, Any]) -> None:
    if ops_settings.database_url is None:
        pytest.skip("DATABASE_URL not set: Neon parity is optional in the runbook")
    conn: psycopg.Connection[Any] = connect_read_only(ops_settings.database_url, ops_settings)
    with conn:
        result = compare(blob_state, conn)
    evidence.update({
        "blob_hash": result.blob_hash, "neon_hash": result.neon_hash,
        "blob_counts": result.blob_counts, "neon_counts": result.neon_counts,
        "differences": {k: v for k, v in result.differences.items() if v},
        "runbook_lines": [f"blob {result.blob_hash}", f"neon {result.neon_hash}",
                          f"canonical parity hash match: {result.match}"],
    })
    assert result.match, (
        f"blob and neon admin state differ (blob {result.blob_hash}, neon {result.neon_hash}): "
        + "; ".join(result.lines())
    )
