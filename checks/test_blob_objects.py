"""Blob fallback objects: the store under ADMIN_BLOB_PREFIX holds exactly the objects
the admin state names (``content-state.json`` and ``history.json``), nothing missing,
nothing extra.

blob_fallback judges the two files' contents and ignores anything else the listing
returns; a stray object beside them (a half-finished refresh's temporary file, a copy
left by hand) would be read by the app's blob backend or hide a failed rename, and no
other check would see it. Reads only the listing, never an object's body."""

from __future__ import annotations

import pytest

from opsgate.clients.blob import CONTENT_STATE, HISTORY
from opsgate.config import Settings
from opsgate.errors import BlobError
from opsgate.pytest_plugin.fixtures import fail
from opsgate.pytest_plugin.plugin import get_state
from opsgate.verify.blob_parity import store_for
from opsgate.verify.evidence_blob import BlobObjects, BlobStoreUsed
from opsgate.verify.evidence_types import EvidenceStore

pytestmark = pytest.mark.blob_objects


def test_blob_store_holds_exactly_the_admin_state(ops_settings: Settings,
                                                  evidence: EvidenceStore,
                                                  pytestconfig: pytest.Config) -> None:
    prefix = ops_settings.admin_blob_prefix
    store = store_for(ops_settings, get_state(pytestconfig).unreachable)
    evidence.set(BlobStoreUsed(store.describe()))
    try:
        found = sorted(o.pathname for o in store.list(prefix))
    except BlobError as exc:
        fail(f"the blob store could not be listed: {exc}")
    objects = BlobObjects(prefix, [prefix + CONTENT_STATE, prefix + HISTORY], found)
    evidence.set(objects)
    wrong = ([f"missing {', '.join(objects.missing)}"] if objects.missing else []) + (
        [f"{len(objects.extra)} object(s) the admin state does not name: "
         + ", ".join(objects.extra[:10])] if objects.extra else [])
    if wrong:
        fail(f"the blob fallback under {prefix!r} holds {len(found)} object(s), expected "
             f"exactly {', '.join(objects.expected)}: " + "; ".join(wrong))
