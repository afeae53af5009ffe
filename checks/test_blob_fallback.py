"""Blob fallback verification (runbook): the blob copy of the admin state under
ADMIN_BLOB_PREFIX is complete and well-formed (usable if ADMIN_STORAGE_BACKEND is
switched to blob), and its canon-v1 hash equals Postgres' admin state.

``history.json`` is streamed each time it is read, never held whole."""

from __future__ import annotations

import pytest

from opsgate.clients import db
from opsgate.clients.blob import BlobAdminState, BlobStore, open_admin_state
from opsgate.config import Settings
from opsgate.errors import BlobError
from opsgate.pytest_plugin.fixtures import fail, run_session
from opsgate.pytest_plugin.plugin import get_state
from opsgate.verify.blob_parity import blob_hash, compare, store_for
from opsgate.verify.evidence_blob import (
    BlobContentState,
    BlobListing,
    BlobNeonComparison,
    BlobStoreUsed,
)
from opsgate.verify.evidence_types import BlobParityEvidence, EvidenceStore, Partial
from opsgate.verify.expectations import Expectations

#: The repeatable migration that writes Neon's admin state to the blob fallback.
FALLBACK_REFRESH = "20261126_1006_neon_to_blob_admin_fallback_refresh"

pytestmark = pytest.mark.blob_fallback


@pytest.fixture(scope="module")
def _blob_listing(ops_settings: Settings, pytestconfig: pytest.Config
                  ) -> tuple[BlobStore, BlobAdminState | BlobError]:
    """The store and its listing (or why it could not be read), once for both tests: a
    store that accepts connections and then does not answer is waited out once (its
    attempts, each the HTTP time-out), not once per test."""
    store = store_for(ops_settings, get_state(pytestconfig).unreachable)
    try:
        return store, open_admin_state(store, ops_settings.admin_blob_prefix)
    except BlobError as exc:
        return store, exc


@pytest.fixture
def blob_state(_blob_listing: tuple[BlobStore, BlobAdminState | BlobError],
               evidence: EvidenceStore) -> BlobAdminState:
    store, state = _blob_listing
    evidence.set(BlobStoreUsed(store.describe()))
    if isinstance(state, BlobError):
        fail(f"the blob fallback is not usable: {state}")
    evidence.set(BlobListing([o.as_dict() for o in state.objects],
                             getattr(store, "pages", None)))
    return state


def test_blob_state_is_complete_and_well_formed(blob_state: BlobAdminState,
                                                evidence: EvidenceStore) -> None:
    keys = len(blob_state.content_state)
    evidence.set(BlobContentState(keys))
    try:
        evidence.set(BlobContentState(keys, sum(1 for _ in blob_state.entries())))
    except BlobError as exc:
        fail(f"the blob fallback is not usable: {exc}")
    if not blob_state.content_state:
        fail("content-state.json holds no key")


@pytest.mark.opsgate_role(BlobParityEvidence.ROLE)
def test_blob_and_neon_hashes_match(blob_state: BlobAdminState, ops_settings: Settings,
                                    expectations: Expectations, evidence: EvidenceStore,
                                    pytestconfig: pytest.Config,
                                    _read_only_sessions: dict[str, db.ReadOnlySession]
                                    ) -> None:
    pinned = expectations.pinned.get("admin_state_sha256")
    if ops_settings.database_url is None:
        # The runbook makes Neon parity optional; what was not compared is said, in the
        # evidence and so in every report ("partial"), never passed over in silence.
        partial = ("Neon parity not compared: DATABASE_URL is not set; only the blob "
                   "copy itself was verified")
        evidence.set(Partial(partial))
        try:
            only_blob, _ = blob_hash(blob_state)
        except BlobError as exc:
            fail(f"the blob fallback is not usable: {exc}")
        evidence.set(BlobParityEvidence(only_blob, partial=partial))
        if pinned and only_blob != pinned:
            fail(f"the blob admin state changed: canon-v1 hash {only_blob}, "
                 f"pinned {pinned} in {expectations.source}")
        return
    # The run's read-only connection (target_db's), asked for only when there is a URL.
    with run_session(ops_settings, pytestconfig, _read_only_sessions) as conn:
        try:
            result = compare(blob_state, conn)
        except BlobError as exc:
            fail(f"the blob fallback is not usable: {exc}")
    evidence.set(BlobParityEvidence(result.blob_hash, result.neon_hash))
    evidence.set(BlobNeonComparison(
        result.blob_counts, result.neon_counts,
        {k: v for k, v in result.differences.items() if v},
        [f"blob {result.blob_hash}", f"neon {result.neon_hash}",
         f"canonical parity hash match: {result.match}"], pinned))
    if pinned and result.neon_hash != pinned:
        fail(f"the admin state changed: canon-v1 hash {result.neon_hash}, pinned "
             f"{pinned} in {expectations.source}")
    if not result.match:
        fail(f"blob and neon admin state differ (blob {result.blob_hash}, neon "
             f"{result.neon_hash}): " + "; ".join(result.lines())
             + f"; if Neon is right, refresh the fallback: opsgate migrate run "
             f"{FALLBACK_REFRESH} --apply")
